"""experiment=gpt_speedrun as a user types it (run.py in a subprocess), with shortened budgets: the
benchmark data comes with the environment (`uv sync`), so the run reaches its report card."""

import json
import time

import pytest

from tests.helpers import run_cli, run_dirs


def quoted(overrides: list[str]) -> str:
    return "[" + ",".join(f"'{o}'" for o in overrides) + "]"


def shortened(data_dir) -> list[str]:
    """gpt_speedrun's stages at test size: a 1-layer net, 2 steps each, 2 items per benchmark."""
    data = [f"paths.data_dir={data_dir}", "data.max_bytes=60000", "data.sequence_len=32", "data.batch_size=4",
            "callbacks.progress_bar=null"]
    steps = ["trainer.max_steps=2", "trainer.val_check_interval=2"]
    net = ["model.net.config.n_layer=1", "model.net.config.n_head=2", "model.net.config.n_embd=16"]
    base = [*data, "data.tokenizer_train_bytes=30000", "data.vocab_size=300", "data.max_val_sequences=4", *net, *steps]
    return [
        f"speedrun.base_overrides={quoted(base)}", f"speedrun.sft_overrides={quoted([*data, *steps])}",
        "speedrun.max_new_tokens=4", "evaluation.max_items=2", "evaluation.tasks.gsm8k.max_items=1",
        "evaluation.tasks.gsm8k.max_new_tokens=4", "evaluation.tasks.humaneval.max_items=1",
        "evaluation.tasks.humaneval.max_new_tokens=4",
    ]


@pytest.mark.slow
def test_gpt_speedrun_runs_as_typed_to_its_report_card(tmp_path):
    log_dir = tmp_path / "logs"
    started = time.perf_counter()
    result = run_cli(["experiment=gpt_speedrun", *shortened(tmp_path / "data"), f"store.dir={tmp_path / 'store'}"],
                     log_dir, runs=5)  # tokenizer, base, SFT, evaluation: a few short runs
    assert result.returncode == 0, result.stderr[-3000:]
    assert "GPT speedrun report card" in result.stdout, f"no report after {time.perf_counter() - started:.0f} s"
    [run_dir] = [d for d in run_dirs(log_dir) if (d / "report.md").is_file()]
    report = (run_dir / "report.md").read_text()
    assert "| arc_easy | 2 |" in report and "| humaneval | 1 |" in report and "CORE-proxy" in report
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "completed" and "eval/core" in record["metrics"]
