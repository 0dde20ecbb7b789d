"""Pruning inside a search and time budgets, through run.py as users type them."""

import json
import subprocess
import sys

import optuna
import pytest
from optuna.trial import TrialState

from hylab.pruning import check_pruning, make_pruner
from tests.helpers import ROOT, run_in_process, timeout_for

STUDY = "debug_search"


def test_pruners_are_optunas_own_and_bad_settings_stop_in_one_line():
    assert type(make_pruner("hyperband")) is optuna.pruners.HyperbandPruner
    assert type(make_pruner("successive_halving")) is optuna.pruners.SuccessiveHalvingPruner
    assert type(make_pruner("median", {"n_startup_trials": 1})) is optuna.pruners.MedianPruner
    refusals = [
        (("medain", {}, "sqlite:///s.db", 1), "hydra.sweeper.pruner=medain: not a pruner; choose one of: none, median"),
        (("median", {"n_startup": 1}, "sqlite:///s.db", 1), "hydra.sweeper.pruner_settings={'n_startup': 1} does not suit pruner=median"),
        (("hyperband", {}, "sqlite:///s.db", 2), "optuna prunes single-objective studies only"),
        (("hyperband", {}, None, 1), "the trials report to the study through its storage; set hydra.sweeper.storage"),
    ]
    for arguments, message in refusals:
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("{", r"\{")) as error:
            check_pruning(*arguments)
        assert "\n" not in str(error.value)
    check_pruning("none", {}, None, 2)  # no pruner: nothing is needed


@pytest.mark.slow
def test_a_pruned_trial_stops_is_recorded_and_is_not_trained_again(tmp_path):
    """Two trials in a fixed order (queued in the study): a learning one, then one with lr=0 that
    the median pruner stops after its first epoch; the same command again trains nothing."""
    sweep_dir = tmp_path / "debug" / "optuna" / STUDY
    sweep_dir.mkdir(parents=True)
    storage = f"sqlite:///{sweep_dir}/study.db"
    study = optuna.create_study(study_name=STUDY, storage=storage, direction="maximize")
    study.enqueue_trial({"model.optimizer.lr": 0.003})
    study.enqueue_trial({"model.optimizer.lr": 0.0})  # never learns: worse than the median at epoch 0
    command = [sys.executable, str(ROOT / "run.py"), "hparams_search=seresnet_optuna", "debug=limit", "callbacks.progress_bar=null",
               f"paths.log_dir={tmp_path}", "model.optimizer.lr=choice(0.003, 0.0)", "model.optimizer.weight_decay=0.0",
               "model.label_smoothing=0.0", "model.scheduler.warmup_epochs=0", "trainer.max_epochs=3", "trainer.limit_train_batches=8",
               "test_after_fit=false", "hydra.sweeper.n_trials=2", "hydra.sweeper.pruner=median",
               "+hydra.sweeper.pruner_settings.n_startup_trials=1"]
    first = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout_for(3))
    assert first.returncode == 0, first.stderr[-3000:]

    trials = optuna.load_study(study_name=STUDY, storage=storage).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED]
    assert sorted(trials[0].intermediate_values) == [0, 1, 2] and list(trials[1].intermediate_values) == [0]
    pruned = json.loads((sweep_dir / "trial_1" / "metrics.json").read_text())
    assert pruned["status"] == "completed" and pruned["stopped"] == "pruned at epoch 1"
    assert pruned["progress"]["epochs_completed"] == 1
    assert (sweep_dir / "trial_1" / "checkpoints" / "last.ckpt").is_file()
    assert "stopped" not in json.loads((sweep_dir / "trial_0" / "metrics.json").read_text())
    table = (sweep_dir / "aggregate.md").read_text()
    assert "| pruned at epoch 1 |" in table and "(0 reused from the run store, 1 pruned)" in table
    assert not list((tmp_path / "store").glob("*/entry.json"))[1:]  # only the finished trial is stored

    records = {p: p.read_text() for p in sweep_dir.glob("trial_*/metrics.json")}
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout_for(1))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 of 2 trials done or running" in again.stdout + again.stderr
    assert {p: p.read_text() for p in sweep_dir.glob("trial_*/metrics.json")} == records  # nothing trained again
    assert len(optuna.load_study(study_name=STUDY, storage=storage).get_trials()) == 2


@pytest.mark.slow
def test_a_time_budget_stops_the_run_and_is_recorded(tmp_path):
    _, record = run_in_process(["debug=limit", "trainer.max_time={seconds: 1}", "trainer.max_epochs=1000",
                                "callbacks.progress_bar=null", "test_after_fit=false"], tmp_path / "run")
    assert record["status"] == "completed" and record["stopped"] == "time budget"
    assert record["progress"]["epochs_completed"] < 1000
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
