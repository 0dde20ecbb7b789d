"""bench/gpt_speed.py end to end at a tiny shape (its --dry-run): the profile of both nets, one
round of interleaved training, the table and results.json a user reads."""

import json
import math
import shutil
import sys
from pathlib import Path

import pytest
import torch

from bench import gpt_speed


@pytest.mark.slow
def test_speed_bench_dry_run_prints_and_writes_both_nets(tmp_path, monkeypatch, capsys):
    out, corpus = tmp_path / "out", tmp_path / "corpus"
    corpus.mkdir()
    for name in ("decoder.py", "encoder.py"):  # a small corpus: reading the whole stdlib costs more than the bench
        shutil.copy(Path(json.__file__).parent / name, corpus / name)
    data = [f"paths.data_dir={tmp_path / 'data'}", "data.source=files", f"data.paths=[{corpus}]"]
    monkeypatch.setattr(sys, "argv", ["bench.gpt_speed", "--dry-run", "--out", str(out), *data])
    threads = torch.get_num_threads()
    try:
        gpt_speed.main()  # sets one thread, as the bench measures
    finally:
        torch.set_num_threads(threads)
    printed = capsys.readouterr().out
    assert "head + soft-cap + loss" in printed and "MLP activation GELU" in printed
    assert "tokens/s ratio hylab/nanoGPT" in printed
    report = json.loads((out / "results.json").read_text())
    (row,) = report["rounds"]
    for net in ("hylab", "nanoGPT"):
        assert row[net]["steps"] > 0 and math.isfinite(row[net]["val_bpb"]) and row[net]["tokens_per_s"] > 0
        assert row[net]["train_s"] >= 1.0  # each trained for its own full budget
    assert report["threads"] == 1
    assert (out / "results.txt").read_text().strip() in printed
