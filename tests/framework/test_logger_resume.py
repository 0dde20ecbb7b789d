"""A run killed after its first checkpoint and continued by the same command writes one curve in
each logger: one TensorBoard folder, one MLflow run, one W&B run id (offline), with every step of
an uninterrupted run once, read back with each logger's own reader (tests/framework/curves.py).

One killed + resumed run carries all three loggers. The killed run is SIGKILLed two steps after
its checkpoint, so it has logged steps the resumed run trains (and logs) again."""

import csv
import json
from pathlib import Path

import pytest

from tests.framework.curves import mlflow_curves, offline_folders, tensorboard_curves, wandb_curves
from tests.framework.signals import signal_overrides
from tests.helpers import run_cli, run_dirs, run_in_process

pytestmark = pytest.mark.slow
pytest.importorskip("mlflow", reason="needs the mlflow extra (uv sync --extra mlflow)")
pytest.importorskip("wandb", reason="needs the wandb extra (uv sync --extra wandb)")
pytest.importorskip("tensorboard", reason="needs tensorboard (a dev dependency)")

# debug=limit: 3 training steps per epoch, a checkpoint after each epoch's validation (step 3)
FIT = ["debug=limit", "trainer.max_epochs=2", "test_after_fit=false", "callbacks.progress_bar=null"]
LOGGERS = ["logger=[tensorboard,mlflow,wandb]"]
CHECKPOINT_STEP = 3
KILL_AT_STEP = 5  # two steps after the first checkpoint
# a run with all three loggers starts W&B's service and MLflow's store too: half a short run more
LOGGED_RUN = 1.5
OFFLINE = {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}
# Lightning adds `epoch` to every call that logs, so it has several values at one step in any run
BOOKKEEPING = {"epoch"}


def record(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def csv_curves(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    curves: dict[str, list[tuple[int, float]]] = {}
    with open(run_dir / "csv" / "metrics.csv") as rows:
        for row in csv.DictReader(rows):
            for name, value in row.items():
                if name != "step" and value != "":
                    curves.setdefault(name, []).append((int(row["step"]), float(value)))
    return curves


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, list[tuple[int, float]]]:
    """The curves of the same training, uninterrupted (Lightning's CSV logger, in this process:
    the cheapest)."""
    run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    _, done = run_in_process([*FIT, "logger=csv"], run_dir)
    assert done["status"] == "completed"
    return csv_curves(run_dir)


def same_curve(read: dict, reference: dict, logger: str) -> None:
    for name, points in reference.items():
        steps = [step for step, _ in read.get(name, [])]
        assert steps == [step for step, _ in points], f"{logger}: {name}"
        if name not in BOOKKEEPING:
            assert all(a < b for a, b in zip(steps, steps[1:])), f"{logger}: {name} steps {steps}"
        assert [v for _, v in read[name]] == pytest.approx([v for _, v in points], rel=1e-5, abs=1e-6), f"{logger}: {name}"


def test_a_killed_run_continued_by_the_same_command_writes_one_curve_in_each_logger(tmp_path, uninterrupted):
    log_dir = tmp_path / "logs"
    command = [*FIT, *LOGGERS, *signal_overrides(tmp_path / "fired", "SIGKILL", at_step=KILL_AT_STEP)]
    assert run_cli(command, log_dir, runs=LOGGED_RUN, env=OFFLINE).returncode == -9
    (killed_dir,) = run_dirs(log_dir / "debug")
    killed = record(killed_dir)["loggers"]  # in the record before training

    again = run_cli(command, log_dir, runs=LOGGED_RUN, env=OFFLINE)
    assert again.returncode == 0, again.stderr[-2000:]
    (resumed_dir,) = set(run_dirs(log_dir / "debug")) - {killed_dir}
    resumed = record(resumed_dir)
    assert resumed["status"] == "completed" and resumed["resumed_from"] == str(killed_dir)
    assert resumed["loggers"] == killed

    # TensorBoard: one folder, the killed run's; the resumed run made none of its own
    assert killed["tensorboard"]["save_dir"] == str(killed_dir) and not (resumed_dir / "tensorboard").exists()
    same_curve(tensorboard_curves(killed_dir / "tensorboard"), uninterrupted, "tensorboard")

    # MLflow: one run in the experiment, the one the record names
    from mlflow.tracking import MlflowClient

    uri, run_id = killed["mlflow"]["tracking_uri"], killed["mlflow"]["run_id"]
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [r.info.run_id for r in runs] == [run_id]
    same_curve(mlflow_curves(uri, run_id), uninterrupted, "mlflow")

    # W&B: both processes wrote offline folders of one run id, beside each other
    folders = sorted((killed_dir / "wandb").glob("offline-run-*"))
    assert len(folders) == 2 and folders == offline_folders(killed_dir, killed["wandb"]["id"])
    assert not (resumed_dir / "wandb").exists()
    # W&B writes through its own service process: what that process had not yet written when the
    # run was SIGKILLed is gone (docs/reliability.md). What it holds is the uninterrupted curve,
    # each step once, and every step from the checkpoint on is there.
    held = wandb_curves(folders)
    kept = {name: [(step, value) for step, value in points if step >= CHECKPOINT_STEP or step in dict(held.get(name, []))]
            for name, points in uninterrupted.items()}
    same_curve(held, {name: points for name, points in kept.items() if points}, "wandb")
