"""The table every multirun ends with, gathered from each experiment's folder of the sweep."""

import json

from omegaconf import OmegaConf

from hylab.sweep_summary import SweepSummary


def fake_job(folder, experiment: str, seed: int, accuracy: float) -> None:
    (folder / ".hydra").mkdir(parents=True)
    record = {"status": "completed", "overrides": [f"experiment={experiment}", f"seed={seed}"], "metrics": {"test/acc": accuracy}}
    (folder / "metrics.json").write_text(json.dumps(record))


def test_a_sweep_over_experiments_is_summarized_from_every_experiment_folder(tmp_path):
    sweep = "2026-01-01_00-00-00_abc123"
    scores = {"a": [0.90, 0.92], "b": [0.80, 0.84]}
    number = 0
    for experiment, accuracies in scores.items():
        for seed, accuracy in enumerate(accuracies):
            fake_job(tmp_path / experiment / "multiruns" / sweep / str(number), experiment, seed, accuracy)
            number += 1
    (tmp_path / "other" / "multiruns" / "2026-01-01_00-00-01_zzz999" / "0").mkdir(parents=True)  # another sweep: not read
    parent = tmp_path / "default_experiment" / "multiruns" / sweep  # where Hydra's parent process resolves the sweep dir
    parent.mkdir(parents=True)
    SweepSummary().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(parent)}}}))
    table = (parent / "aggregate.md").read_text()
    assert table.splitlines()[0] == "| experiment | n | test/acc |"
    assert "| a | 2 | 0.9100 ± 0.0141 |" in table and "| b | 2 | 0.8200 ± 0.0283 |" in table
    assert "4 completed jobs (0 reused from the run store), 0 unfinished" in table
