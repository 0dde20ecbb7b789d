"""Two "nodes" on localhost: two torchrun agents (one process each) rendezvous on 127.0.0.1 and
train one DDP run (trainer=ddp_cpu_multinode, gloo): one run folder, one metrics.json, both ranks
end with the same weights."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import ROOT, timeout_for

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_torchrun_nodes_train_one_ddp_run(tmp_path):
    run_dir = tmp_path / "run"
    port = free_port()
    args = [
        "trainer=ddp_cpu_multinode", "debug=limit", "trainer.max_epochs=1", "callbacks.progress_bar=null",
        f"paths.log_dir={tmp_path}", f"hydra.run.dir={run_dir}",
        "+callbacks.rank_weights._target_=tests.scale.rank_weights.SaveRankWeights",
        f"+callbacks.rank_weights.folder={tmp_path / 'weights'}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = [
        subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1", f"--node-rank={rank}",
             "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=hylab-test", str(ROOT / "run.py"), *args],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for rank in (0, 1)
    ]
    outputs = []
    try:
        for node in nodes:
            outputs.append(node.communicate(timeout=timeout_for(3))[0])
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
    assert [n.returncode for n in nodes] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    # one run folder with one record, written by rank 0
    records = list(tmp_path.rglob("metrics.json"))
    assert records == [run_dir / "metrics.json"]
    record = json.loads(records[0].read_text())
    assert record["status"] == "completed" and "test/acc" in record["metrics"]
    log = (run_dir / "run.log").read_text()
    assert "distributed_backend=gloo" in log and "All distributed processes registered. Starting with 2 processes" in log
    # both ranks hold the same weights at the end
    w0, w1 = (torch.load(tmp_path / "weights" / f"weights_rank{r}.pt", weights_only=True) for r in (0, 1))
    assert w0.keys() == w1.keys() and all(torch.equal(w0[k], w1[k]) for k in w0)
