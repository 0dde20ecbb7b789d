"""The run store: hashing, registration, reuse, corruption handling, and concurrent requests."""

import json
import subprocess
import sys
import zipfile
from pathlib import Path

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


def test_a_time_budget_left_at_null_keeps_the_hash_of_runs_stored_before_it_existed(tmp_path):
    from omegaconf import OmegaConf

    cfg = compose_run(BASE, tmp_path / "a")
    assert cfg.trainer.max_time is None
    without = OmegaConf.to_container(cfg)
    del without["trainer"]["max_time"]  # a config from before the setting existed
    assert training_hash(cfg) == training_hash(OmegaConf.create(without))
    budget = compose_run([*BASE, "trainer.max_time=00:00:01:00"], tmp_path / "b")
    assert training_hash(budget) != training_hash(cfg)


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


def flip_a_byte(path) -> None:
    """Damage a file in place (as a disk error would), not by replacing it."""
    with open(path, "r+b") as handle:
        handle.seek(path.stat().st_size // 2)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 0xFF]))


def test_the_stored_checkpoint_is_a_copy_and_a_corrupt_entry_is_moved_aside(tmp_path):
    _, record = run_in_process(BASE, tmp_path / "run")
    store = RunStore(tmp_path / "logs" / "store")
    entry = store.find(record["config_hash"])
    flip_a_byte(Path(entry.record["source_checkpoint"]))  # the run's own checkpoint
    assert store.find(record["config_hash"]) is not None  # a copy: the stored one is intact
    flip_a_byte(entry.checkpoint)
    assert store.find(record["config_hash"]) is None
    (aside,) = (tmp_path / "logs" / "store" / "corrupt").iterdir()
    assert (aside / "model.ckpt").is_file() and aside.name.startswith(record["config_hash"])


def fake_checkpoint(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("data.pkl", b"weights")
    return path


def test_a_record_without_its_optimized_metric_is_not_registered_and_an_old_one_is_trained_again(tmp_path):
    from hylab.runner import register_in_store, reused_run

    cfg = compose_run([*BASE, "store.reuse=true"], tmp_path / "run")
    key = training_hash(cfg)
    checkpoint = fake_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    incomplete = {"config_hash": key, "checkpoints": {"best": str(checkpoint)}, "metrics": {"test/acc": 0.5},
                  "optimized_metric": {"name": "val/acc_best", "value": None}}
    register_in_store(cfg, incomplete)
    store = RunStore(cfg.store.dir)
    assert store.find(key) is None
    store.register(key, checkpoint, incomplete, {})  # as a store written before records were checked
    assert reused_run(cfg, key) is None  # so the sweep trains it again instead of failing on it
    assert store.find(key) is None and len(list((Path(cfg.store.dir) / "corrupt").iterdir())) == 1


def test_a_completed_unregistered_store_training_is_adopted_not_trained_again(tmp_path, monkeypatch):
    import hylab.store

    key = training_hash(compose_for("seresnet_digits", BASE, tmp_path))
    run_dir = tmp_path / "debug" / "runs" / "2026-01-01_00-00-00_store-abcdef"
    checkpoint = fake_checkpoint(run_dir / "checkpoints" / "epoch_001.ckpt")
    record = {"run_id": run_dir.name, "run_dir": str(run_dir), "status": "completed", "config_hash": key,
              "checkpoints": {"best": str(checkpoint), "last": str(checkpoint)},
              "optimized_metric": {"name": "val/acc_best", "value": 0.5}, "metrics": {"val/acc_best": 0.5}}
    (run_dir / "metrics.json").write_text(json.dumps(record))
    monkeypatch.setattr(hylab.store, "train_in_subprocess", lambda *args: pytest.fail("trained again"))
    entry = RunStore(tmp_path / "store").get_or_train("seresnet_digits", BASE, tmp_path)
    assert entry.run_dir == str(run_dir) and entry.checkpoint.read_bytes() == checkpoint.read_bytes()


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
