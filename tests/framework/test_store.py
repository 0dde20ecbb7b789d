"""The run store: hashing, registration, reuse, corruption handling, and concurrent requests."""

import json
import subprocess
import sys

import pytest
import torch

from hydra.utils import instantiate

from hylab.checkpoints import load_checkpoint, load_net, net_config
from hylab.errors import UserError
from hylab.store import RunStore, compose_for, training_hash
from tests.helpers import ROOT, compose_run, run_in_process, timeout_for

BASE = ["debug=limit", "callbacks.progress_bar=null", "test_after_fit=false"]


def test_training_hash_ignores_what_does_not_change_the_weights(tmp_path):
    base = training_hash(compose_run(BASE, tmp_path / "a"))
    same = [
        [*BASE, "logger=tensorboard"],
        [*BASE, "trainer.devices=2", "trainer.accelerator=cpu"],
        [*BASE, "data.num_workers=2", f"paths.data_dir={tmp_path}"],
        [*BASE, "callbacks.progress_bar=null", "task_name=other", "trainer.log_every_n_steps=5"],
    ]
    for overrides in same:
        assert training_hash(compose_run(overrides, tmp_path / "b")) == base, overrides
    different = [[*BASE, "seed=1"], [*BASE, "model.optimizer.lr=0.01"], [*BASE, "trainer.max_epochs=3"], [*BASE, "callbacks=ema"]]
    for overrides in different:
        assert training_hash(compose_run(overrides, tmp_path / "c")) != base, overrides


def test_compose_for_gives_the_runs_hash(tmp_path):
    cfg = compose_for("seresnet_digits", BASE, tmp_path / "logs")
    assert training_hash(cfg) == training_hash(compose_run(BASE, tmp_path / "run"))


def test_compose_for_reads_group_overrides_as_run_py_does(tmp_path):
    dotted = compose_for(None, ["model.net=timm"], tmp_path / "logs")
    grouped = compose_for(None, ["model/net=timm"], tmp_path / "logs")
    default = compose_for(None, [], tmp_path / "logs")
    assert dotted.model.net == grouped.model.net and dotted.model.net._target_ != default.model.net._target_
    assert training_hash(dotted) == training_hash(grouped)


def test_store_cli_lists_from_the_default_config(tmp_path, capsys):
    from hylab.store_cli import main

    _, record = run_in_process(BASE, tmp_path / "run")
    capsys.readouterr()  # the run's own output
    assert main(["--log-dir", str(tmp_path / "logs"), "list"]) == 0
    (line,) = capsys.readouterr().out.strip().splitlines()
    assert line.startswith(record["config_hash"])


def test_completed_runs_are_registered_and_reused_without_training(tmp_path):
    _, record = run_in_process(BASE, tmp_path / "run")
    store = RunStore(tmp_path / "logs" / "store")
    entry = store.find(record["config_hash"])
    assert entry is not None and entry.record["run_id"] == record["run_id"]
    # asking again by experiment + overrides finds it: no subprocess is started (it would take seconds)
    again = store.get_or_train("seresnet_digits", BASE, tmp_path / "logs")
    assert again.key == entry.key and again.checkpoint.is_file()
    assert not list(tmp_path.rglob("*_store-*"))  # nothing was trained for it
    net = load_net(again.checkpoint)
    assert net(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    # a second identical run does not overwrite the entry
    _, second = run_in_process(BASE, tmp_path / "run2")
    assert second["config_hash"] == record["config_hash"]
    assert store.find(record["config_hash"]).record["run_id"] == record["run_id"]


def test_corrupt_entry_is_moved_aside_not_used(tmp_path):
    _, record = run_in_process(BASE, tmp_path / "run")
    store = RunStore(tmp_path / "logs" / "store")
    checkpoint = store.find(record["config_hash"]).checkpoint
    data = bytearray(checkpoint.read_bytes())
    checkpoint.unlink()  # the entry is a hard link of the run's checkpoint: break the link before damaging it
    data[len(data) // 2] ^= 0xFF
    checkpoint.write_bytes(bytes(data))
    assert store.find(record["config_hash"]) is None
    (aside,) = (tmp_path / "logs" / "store" / "corrupt").iterdir()
    assert (aside / "model.ckpt").is_file() and aside.name.startswith(record["config_hash"])


def test_load_net_rejects_mismatched_shapes(tmp_path):
    _, record = run_in_process(BASE, tmp_path / "run")
    path = record["checkpoints"]["last"]
    # the same net with another number of classes: every tensor fits but the head
    other = instantiate({**net_config(load_checkpoint(path)), "num_classes": 7})
    with pytest.raises(UserError, match=r"teacher=.* does not fit the net: shape mismatch \['head"):
        load_net(path, "teacher", expected=other)


@pytest.mark.slow
def test_two_processes_asking_for_the_same_run_train_it_once(tmp_path):
    command = [sys.executable, "-m", "hylab.store_cli", "--log-dir", str(tmp_path), "get", "seresnet_digits", *BASE]
    procs = [subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [proc.communicate(timeout=timeout_for(5)) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), [err[-2000:] for _, err in outputs]
    answers = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert answers[0] == answers[1]
    trained = list((tmp_path / "debug" / "runs").glob("*_store-*"))
    assert len(trained) == 1  # one process trained, the other waited and reused it
    logs = "".join(err for _, err in outputs)
    # the second process waited for the first, or (started late on a busy machine) found it stored
    assert any(m in logs for m in ("being trained by another process; waiting", "trained meanwhile", "reusing stored run"))


def test_records_get_the_permissions_of_any_new_file(tmp_path):
    import os

    from hylab.records import atomic_write_text

    atomic_write_text(tmp_path / "entry.json", "{}")
    plain = tmp_path / "plain.json"
    plain.write_text("{}")
    # another user of a shared store reads entries as they read any file (mkstemp alone gives 0600)
    assert os.stat(tmp_path / "entry.json").st_mode & 0o777 == os.stat(plain).st_mode & 0o777
