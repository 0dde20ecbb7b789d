"""The hybrid family's distributed paths on two CPU processes (gloo): AdaFace's feature-norm
statistics are the statistics of every rank's batch together, and SAM and AdaFace train under
DDP through run.py."""

import json

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lightning_modules.hybrid.losses import synced_mean_std
from tests.helpers import run_cli, run_dirs

RANK_VALUES = [torch.tensor([1.0, 2.0, 4.0]), torch.tensor([3.0, 5.0, 7.0, 11.0, 13.0])]


def _rank_statistics(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        mean, std = synced_mean_std(RANK_VALUES[rank])
        torch.save({"mean": mean, "std": std}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_adaface_norm_statistics_pool_every_ranks_batch(tmp_path):
    mp.spawn(_rank_statistics, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    pooled = torch.cat(RANK_VALUES)  # unequal batch sizes on the two ranks
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert torch.allclose(got["mean"], pooled.mean()) and torch.allclose(got["std"], pooled.std())


@pytest.mark.slow
@pytest.mark.parametrize("experiment,extra", [
    ("hybrid_ce", ["model.optimization.sam.enabled=true"]),
    ("hybrid_adaface", []),
])
def test_sam_and_adaface_train_under_ddp(experiment, extra, tmp_path):
    done = run_cli([f"experiment={experiment}", *extra, "trainer=ddp_cpu", "debug=limit", "callbacks.progress_bar=null"], tmp_path, runs=5)
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = run_dirs(tmp_path)
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "completed" and record["progress"]["global_step"] > 0
    assert (run_dir / "train_ddp_process_1.log").exists()  # a second rank really ran
