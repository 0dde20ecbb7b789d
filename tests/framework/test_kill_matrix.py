"""The kill matrix, run in this process: one short training stopped at every point in turn
(before its first checkpoint, during validation, mid-epoch by Ctrl-C, mid-epoch by a kill, during
the test after fit), each time continued by the same command, ends with the uninterrupted run's
metrics and weights. The CLI cells (real SIGKILL and SIGTERM, sweeps, optuna, DDP) are in
test_reliability.py; docs/reliability.md has the whole matrix."""

import json
import logging
from pathlib import Path

import pytest
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

from tests.framework.signals import Crashed, signal_overrides
from tests.helpers import run_in_process

pytestmark = pytest.mark.slow

SHORT_FIT = ["debug=limit", "trainer.max_epochs=3", "callbacks.progress_bar=null", "logger=csv"]
COMPARED = ("test/acc", "test/loss", "val/acc", "val/acc_best", "val/loss")
# Where the training is stopped, in the order it meets them (3 epochs of 3 steps, then the test;
# a signal during validation stops the run at the end of the next training step).
STOPS = [
    ("before_first_checkpoint", "crash", {"at_step": 1}),
    ("during_validation", "SIGTERM", {"at_validation_epoch": 0}),
    ("mid_epoch_ctrl_c", "SIGINT", {"at_step": 5}),
    ("mid_epoch_kill", "crash", {"at_step": 7}),
    ("during_test", "crash", {"at_test": True}),
]
# status each stopped run leaves, and whether the next run resumes it (no checkpoint before the first)
LEFT = ["failed", "interrupted", "interrupted", "failed", "failed"]


def fit(log_dir: Path, name: str, extra: list[str] = ()) -> dict:
    run_dir = log_dir / "debug" / "runs" / name
    try:
        return run_in_process([*SHORT_FIT, *extra], run_dir, log_dir)[1]
    except (Crashed, SIGTERMException):
        return json.loads((run_dir / "metrics.json").read_text())


def final_weights(record: dict) -> dict:
    return torch.load(record["checkpoints"]["last"], map_location="cpu", weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    record = fit(tmp_path_factory.mktemp("uninterrupted"), "reference")
    assert record["status"] == "completed"
    return record


def test_stopped_at_every_point_in_turn_the_same_command_ends_with_the_uninterrupted_result(tmp_path, uninterrupted, caplog):
    stops = [override for name, signal, when in STOPS for override in signal_overrides(tmp_path / name, signal, name=name, **when)]
    # the store cannot be written (its folder is a file): a warning, the run still completes
    (tmp_path / "not_a_folder").write_text("")
    extra = [*stops, f"store.dir={tmp_path / 'not_a_folder' / 'store'}"]
    records = []
    for attempt, ((name, _, _), status) in enumerate(zip(STOPS, LEFT)):
        record = fit(tmp_path / "logs", f"attempt_{attempt}", extra)
        assert (tmp_path / name).exists() and record["status"] == status, (name, record.get("error"))
        records.append(record)
    with caplog.at_level(logging.WARNING, logger="hylab"):
        finished = fit(tmp_path / "logs", "attempt_last", extra)

    assert finished["status"] == "completed", finished.get("error")
    assert "resumed_from" not in records[1]  # nothing to resume before the first checkpoint
    for earlier, later in zip(records[1:], [*records[2:], finished]):
        assert later["resumed_from"] == earlier["run_dir"]
    for name in COMPARED:
        assert finished["metrics"][name] == uninterrupted["metrics"][name], name
    # the resume after the kill during the test trained nothing: its validation metrics, best
    # score and optimized value come from the checkpoint
    assert finished["optimized_metric"]["value"] == uninterrupted["optimized_metric"]["value"]
    assert finished["checkpoints"]["best_score"] == uninterrupted["checkpoints"]["best_score"]
    assert Path(finished["checkpoints"]["best"]).parent == Path(finished["run_dir"]) / "checkpoints"
    reference, resumed = final_weights(uninterrupted), final_weights(finished)
    assert reference.keys() == resumed.keys()
    assert all(torch.equal(reference[k], resumed[k]) for k in reference)
    assert any("run store" in r.getMessage() and "cannot be written" in r.getMessage() for r in caplog.records)
