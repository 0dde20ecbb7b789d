"""Every kind of bad input in docs/reliability.md's table, through run.py as a user types it: one
`error:` line naming the key or file, exit 2, no traceback, nothing under the log dir. Each row
stops before torch is imported (about a second each)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, timeout_for

UNSET = "HYLAB_TEST_UNSET_VARIABLE"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Files the rows point at: broken overrides files, a zip that is no checkpoint, a RIS checkpoint."""
    import zipfile

    import torch

    folder = tmp_path_factory.mktemp("inputs")
    (folder / "syntax.yaml").write_text("overrides: [seed=1\n")
    (folder / "list.yaml").write_text("- seed=1\n")
    with zipfile.ZipFile(folder / "archive.zip", "w") as archive:
        archive.writestr("notes.txt", "not a checkpoint")
    ris = {"model": {"_target_": "lightning_modules.ris.module.RISLocalizer", "net": {"_target_": "lightning_modules.ris.nets.RISBeamspaceNet"}},
           "task_name": "ris_hybrid"}
    torch.save({"state_dict": {"net.head.weight": torch.zeros(2, 2)}, "hylab": {"config": ris}}, folder / "ris.ckpt")
    (folder / "a_file").write_text("")
    return folder


# (id, arguments, what the one error line says); {in} is the inputs folder.
ROWS = [
    ("overrides-file-yaml-syntax", ["overrides_file={in}/syntax.yaml"], "overrides_file={in}/syntax.yaml: not valid YAML at line 2"),
    ("overrides-file-top-level-list", ["overrides_file={in}/list.yaml"], "overrides_file={in}/list.yaml: expected a list under 'overrides' or a mapping under 'best_params', found a list"),
    ("overrides-file-missing", ["overrides_file={in}/missing.yaml"], "overrides_file={in}/missing.yaml: no such file"),
    ("env-var-in-log-dir", ["paths.log_dir=${oc.env:%s}" % UNSET], "paths.log_dir=${oc.env:%s} needs the environment variable %s, which is not set" % (UNSET, UNSET)),
    ("env-var-in-model-value", ["model.optimizer.lr=${oc.env:%s}" % UNSET], "model.optimizer.lr=${oc.env:%s} needs the environment variable %s" % (UNSET, UNSET)),
    ("zip-not-a-checkpoint", ["task=test", "ckpt_path={in}/archive.zip"], "ckpt_path={in}/archive.zip is not a readable checkpoint"),
    ("checkpoint-of-another-model", ["task=test", "ckpt_path={in}/ris.ckpt"],
     "ckpt_path={in}/ris.ckpt holds a lightning_modules.ris.module.RISLocalizer with net lightning_modules.ris.nets.RISBeamspaceNet (task_name=ris_hybrid), "
     "but this run builds a lightning_modules.classifier.Classifier"),
    ("checkpoint-missing-with-fit", ["task=fit", "ckpt_path={in}/missing.ckpt"], "ckpt_path={in}/missing.ckpt does not exist"),
    ("betas-of-one", ["model.optimizer.betas=[0.9]"], "model.optimizer.betas=[0.9] is not allowed; expected a list of 2 items (each a number)"),
    ("log-dir-under-a-file", ["paths.log_dir={in}/a_file/logs"], "paths.log_dir={in}/a_file/logs: {in}/a_file is a file, not a folder"),
    ("empty-log-dir", ["paths.log_dir="], "paths.log_dir is empty; give it a folder"),
    ("empty-data-dir", ["paths.data_dir="], "paths.data_dir is empty; give it a folder"),
    ("misspelled-key", ["trainer.max_epoch=3"], "trainer.max_epoch is not a setting; did you mean trainer.max_epochs?"),
    ("misspelled-top-level-key", ["sed=3"], "sed is not a setting; did you mean seed?"),
    ("no-such-key", ["zzzz=3"], "zzzz is not a setting; to add a new key write +zzzz=<value>"),
    ("evaluation-without-checkpoint", ["task=test"], "task=test evaluates a checkpoint: add ckpt_path="),
    ("no-such-task", ["task=fitt"], "task='fitt' is not a task of this config; choose one of: fit,"),
    ("no-such-experiment", ["experiment=nope"], "experiment=nope is not an option of experiment; choose one of: deit_distill,"),
    # The GPT task settings are checked with every other value (no checkpoint read, no torch).
    ("generation-value", ["experiment=gpt_tiny", "task=generate", "generation.temperature=-1"], "generation.temperature=-1.0 is out of range; allowed: [0, inf)"),
    ("evaluation-value", ["experiment=gpt_tiny", "task=eval", "evaluation.tasks.mmlu.shots=-1"], "evaluation.tasks.mmlu.shots=-1 is out of range; allowed: [0, inf)"),
    ("speedrun-value", ["experiment=gpt_speedrun", "speedrun.max_new_tokens=0"], "speedrun.max_new_tokens=0 is out of range; allowed: (0, inf)"),
    ("serve-value", ["experiment=gpt_tiny", "task=serve", "serve.port=abc"], "serve.port='abc' is not allowed; expected an integer"),
    ("sweep-bad-value", ["-m", "model.optimizer.lr=1e-3,abc"], "model.optimizer.lr='abc' is not allowed; expected a number"),
    ("sweep-misspelled-key", ["-m", "seed=1,2", "trainer.max_epoch=3"], "trainer.max_epoch is not a setting; did you mean trainer.max_epochs?"),
    ("max-time-not-a-duration", ["trainer.max_time=90min"], "trainer.max_time='90min' is not a duration; give DD:HH:MM:SS"),
    ("no-such-pruner", ["-m", "hparams_search=seresnet_optuna", "hydra.sweeper.pruner=medain"], "hydra.sweeper.pruner=medain is not a pruner; choose one of: none, median,"),
    ("sweep-over-nothing", ["-m", "seed=range(0,0)"], "seed=range(0,0) sweeps over no values, so there is nothing to run"),
]


def run_typed(args: list[str], log_dir: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    """`python run.py paths.log_dir=<log_dir> <args>`: the row's own paths.log_dir wins (last one does)."""
    env = {key: value for key, value in os.environ.items() if key != UNSET}
    return subprocess.run([sys.executable, str(ROOT / "run.py"), f"paths.log_dir={log_dir}", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def assert_one_line(done: subprocess.CompletedProcess, message: str, log_dir: Path) -> None:
    output = done.stdout + done.stderr
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert done.returncode == 2, output[-3000:]
    assert errors == [line for line in errors if message in line] and len(errors) == 1, output[-3000:]
    assert output.strip() == errors[0], output[-3000:]  # nothing but the one line
    assert "Traceback" not in output
    assert sorted(log_dir.rglob("*")) == []  # no run folder, no .hydra, no log


@pytest.mark.parametrize("args,message", [pytest.param(a, m, id=i) for i, a, m in ROWS])
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, inputs, args, message):
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    done = run_typed([arg.replace("{in}", str(inputs)) for arg in args], log_dir)
    assert_one_line(done, message.replace("{in}", str(inputs)), log_dir)


@pytest.mark.slow  # imports torch: ~10 s at load 6
@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="checks the refusal on a machine without a GPU")
def test_a_check_inside_the_run_leaves_no_run_folder(tmp_path):
    """The GPU check needs torch, so it runs after Hydra made the run folder: that folder goes again."""
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    done = run_typed(["trainer.accelerator=gpu"], log_dir)
    assert_one_line(done, "trainer.accelerator=gpu but no CUDA GPU is visible", log_dir)


def test_only_a_folder_holding_nothing_but_hydras_startup_files_is_removed(tmp_path):
    from hylab.runner import discard_unstarted_run_dir

    log_dir = tmp_path / "logs"
    kept, gone = log_dir / "t" / "runs" / "kept", log_dir / "t" / "runs" / "gone"
    for run_dir in (kept, gone):
        (run_dir / ".hydra").mkdir(parents=True)
        (run_dir / ".hydra" / "config.yaml").write_text("a: 1")
        (run_dir / "run.log").write_text("")
    (kept / "metrics.json").write_text("{}")
    discard_unstarted_run_dir(gone, log_dir)
    discard_unstarted_run_dir(kept, log_dir)
    assert not gone.exists() and (kept / "metrics.json").is_file()
    discard_unstarted_run_dir(log_dir / "t" / "runs" / "never_made", log_dir)  # nothing there: nothing happens
    assert kept.is_dir()


@pytest.mark.parametrize("flag,free,message", [(os.ST_RDONLY, 2**30, "is read-only"), (0, 2**20, "is on a full disk")])
def test_a_read_only_or_full_log_dir_is_refused(tmp_path, monkeypatch, flag, free, message):
    """Read-only and full file systems, as os.statvfs reports them (a test cannot mount one)."""
    from hylab.errors import UserError
    from hylab.preflight import check_writable_folder

    real = os.statvfs(tmp_path)
    fake = os.statvfs_result((real.f_bsize, 1, real.f_blocks, free, free, real.f_files, real.f_ffree, real.f_favail, flag, real.f_namemax))
    monkeypatch.setattr(os, "statvfs", lambda path: fake)
    with pytest.raises(UserError, match=f"^paths.log_dir={tmp_path}/logs .*{message}") as error:
        check_writable_folder(tmp_path / "logs", "paths.log_dir")
    assert "\n" not in str(error.value) and not (tmp_path / "logs").exists()


@pytest.mark.slow
def test_a_monitor_the_run_does_not_log_is_one_line_naming_what_it_logs(tmp_path):
    """Known once the sanity validation has run, before the first training step: the run never
    started, so nothing of it stays (no folder, no record)."""
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    done = run_typed(["monitor=val/nope", "debug=limit", "trainer.max_epochs=1", "callbacks.progress_bar=null"], log_dir, timeout=timeout_for(2))  # ~1 min at load 6
    errors = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("error:")]
    assert done.returncode == 2, done.stderr[-3000:]
    assert errors == ["error: monitor=val/nope is not a metric this run logs; set monitor= to one of: val/acc, val/loss"], errors
    assert "Traceback" not in done.stdout + done.stderr
    assert sorted(log_dir.rglob("*")) == []
