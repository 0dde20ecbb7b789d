"""The RIS family end to end through run.py's config path, and the scene cache."""

import csv
from pathlib import Path

import pytest
import torch

from datamodules.ris.datamodule import RISDataModule
from hylab.errors import UserError
from tests.helpers import run_in_process

TINY = [
    "data.n_train=16", "data.n_val=8", "data.n_test=8", "data.batch_size=8", "data.eval_batch_size=8",
    "model.music.azimuth_step_deg=10", "model.music.elevation_step_deg=10", "model.music.inverse_range_points=4",
    "model.music.newton_steps=2", "callbacks.progress_bar=null",
]
TINY_NET = ["model.net.channels=8", "model.net.blocks=1", "model.net.angle_step_deg=15", "model.net.inverse_range_bins=3"]


def test_hybrid_experiment_fast_dev_run(tmp_path):
    value, record = run_in_process(["experiment=ris_hybrid", "debug=fdr", *TINY, *TINY_NET], tmp_path / "run")
    assert record["status"] == "completed" and record["experiment"] == "ris_hybrid"
    metrics = record["metrics"]
    assert value == pytest.approx(metrics["val/rmse_deg_best"]) and 0 <= metrics["test/k_acc"] <= 1
    assert {"val/rmse_deg", "val/rmse_m", "val/k_acc", "test/rmse_deg", "test/rmse_m", "train/loss"} <= set(metrics)
    assert (tmp_path / "run" / "plots" / "val_music_spectrum.png").is_file()


def test_music_baseline_experiment_runs_without_training(tmp_path):
    value, record = run_in_process(["experiment=ris_music_baseline", "debug=fdr", *TINY], tmp_path / "run")
    assert record["status"] == "completed" and record["task"] == "ris_classical"
    assert value == pytest.approx(record["metrics"]["val/rmse_deg"]) and "test/rmse_deg" in record["metrics"]
    assert not record["checkpoints"]


@pytest.mark.parametrize("estimation", [
    ["experiment=ris_music_baseline", "model.refine=ml"],
    ["experiment=ris_music_baseline", "model.k_from=ml"],
    ["experiment=ris_hybrid", "model.k_from=ml", "model.ml.grid_step_deg=null", *TINY_NET],  # the net's proposals start it
])
def test_ml_refinement_and_likelihood_counting_run_through_the_cli(estimation, tmp_path):
    ml = ["model.ml.iterations=2", "model.ml.grid_step_deg=20", "model.ml.grid_inverse_range_points=3"]
    value, record = run_in_process(["debug=fdr", *TINY, *ml, *estimation], tmp_path / "run")
    assert record["status"] == "completed" and 0 <= record["metrics"]["val/k_acc"] <= 1 and value >= 0


def test_classical_task_refuses_a_model_with_a_learned_part(tmp_path):
    with pytest.raises(UserError, match="no learned part"):
        run_in_process(["experiment=ris_hybrid", "task=ris_classical", *TINY, *TINY_NET], tmp_path / "run")


@pytest.mark.slow
def test_fit_logs_covariance_statistics_and_test_reproduces_from_the_checkpoint(tmp_path):
    overrides = ["experiment=ris_hybrid", "debug=limit", "callbacks.ris_covariance_logger.every_n_steps=1", *TINY, *TINY_NET]
    _, trained = run_in_process(overrides, tmp_path / "train")
    with open(tmp_path / "train" / "csv" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    logged = {key for row in rows for key, value in row.items() if value}
    assert {"train/beta", "train/tr_blend", "train/fro_blend_minus_pred", "train/rank_pred", "train/topk_energy_blend"} <= logged
    best = trained["checkpoints"]["best"]
    _, tested = run_in_process([*overrides, "task=test", f"ckpt_path={best}"], tmp_path / "test")
    assert tested["metrics"]["test/rmse_deg"] == pytest.approx(trained["metrics"]["test/rmse_deg"], rel=1e-5)


def cached_module(cache_dir: Path, **kwargs) -> RISDataModule:
    return RISDataModule(n_train=12, n_val=4, n_test=4, batch_size=5, shard_size=5, cache_dir=str(cache_dir), **kwargs)


def test_cached_shards_hold_the_same_scenes_as_the_simulator(tmp_path):
    cached = cached_module(tmp_path / "cache")
    cached.prepare_data()
    cached.setup()
    live = RISDataModule(n_train=12, n_val=4, n_test=4, batch_size=5)
    live.setup()
    assert sorted(p.name for p in (tmp_path / "cache" / "train").iterdir()) == [
        "locks", "manifest.json", "shard_00000.pt", "shard_00001.pt", "shard_00002.pt"]
    indices = [11, 0, 6, 3]
    from_disk, simulated = cached.datasets["train"].__getitems__(indices), live.datasets["train"].__getitems__(indices)
    assert all(torch.equal(from_disk[key], simulated[key]) for key in simulated)
    order = list(cached.train_dataloader().sampler)
    shards = [index // 5 for index in order]
    assert sorted(order) == list(range(12))  # every scene once per epoch ...
    assert sum(a != b for a, b in zip(shards, shards[1:])) == 2  # ... read shard by shard


def test_missing_truncated_or_altered_shards_are_moved_aside_and_rebuilt(tmp_path, caplog):
    cache = tmp_path / "cache"
    cached_module(cache).prepare_data()
    shard = cache / "train" / "shard_00001.pt"
    data = shard.read_bytes()
    live = RISDataModule(n_train=12, n_val=4, n_test=4, batch_size=5)
    live.setup()
    expected = live.datasets["train"].__getitems__([5, 9])
    for damage in (lambda: shard.write_bytes(data[: len(data) // 2]), lambda: shard.write_bytes(b"x" * len(data)), shard.unlink):
        damage()
        module = cached_module(cache)
        module.setup()
        with caplog.at_level("WARNING", logger="datamodules.ris.datamodule"):
            got = module.datasets["train"].__getitems__([5, 9])
        assert all(torch.equal(got[key], expected[key]) for key in expected)
        assert shard.read_bytes() == data  # the same bytes as the first build
    assert "truncated or damaged" not in caplog.text  # a reader knows the checksum ...
    assert caplog.text.count("does not match its checksum") == 2 and "is missing" in caplog.text
    assert len(list(shard.parent.glob("shard_00001.pt.bad-*"))) == 2  # ... and never deletes a shard
    with pytest.raises(UserError, match="another simulator config"):
        cached_module(cache, snapshots=8).setup()
    with pytest.raises(UserError, match="no scene cache"):
        cached_module(tmp_path / "empty").setup()


def fill_cache(cache_dir: str, barrier) -> None:
    barrier.wait()
    cached_module(Path(cache_dir)).prepare_data()


def test_two_processes_filling_one_cache_end_with_identical_valid_shards(tmp_path):
    import multiprocessing

    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(2)
    workers = [context.Process(target=fill_cache, args=(str(tmp_path / "cache"), barrier)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [worker.exitcode for worker in workers] == [0, 0]
    alone = tmp_path / "alone"
    cached_module(alone).prepare_data()
    for split in ("train", "val", "test"):
        shared, single = tmp_path / "cache" / split, alone / split
        names = sorted(p.name for p in shared.glob("shard_*"))
        assert names == sorted(p.name for p in single.glob("shard_*"))  # no temporary or moved-aside files
        assert all((shared / name).read_bytes() == (single / name).read_bytes() for name in names)
        assert (shared / "manifest.json").read_text() == (single / "manifest.json").read_text()
    module = cached_module(tmp_path / "cache")
    module.setup()
    assert len(module.datasets["train"].__getitems__(range(12))["k"]) == 12


def test_optuna_search_minimizes_the_angle_rmse_on_a_subset_without_averaging(tmp_path):
    from tests.helpers import compose_run

    cfg = compose_run(["experiment=ris_hybrid", "hparams_search=ris_optuna"], tmp_path)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("ResumableOptunaSweeper") and sweeper.direction == "minimize"
    assert cfg.optimized_metric == "val/rmse_deg_best" and cfg.hydra.mode.name == "MULTIRUN"
    assert {"model.beta", "model.loss_weights.subspace", "model.optimizer.lr", "model.head_lr_multiplier"} <= set(sweeper.params)
    assert cfg.callbacks.get("ema") is None and cfg.callbacks.get("swa") is None and cfg.data.n_train == 2048
    assert "sqlite:///" in sweeper.storage  # a persistent, resumable study
