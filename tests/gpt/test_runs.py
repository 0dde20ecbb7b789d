"""The GPT family end to end through the config path run.py uses: every experiment, the
tokenizer / generate / chat tasks, resume, and the errors a user meets first."""

import csv
import io
import json

import pytest
import torch

from hylab.errors import UserError
from tests.helpers import ROOT, run_in_process, timeout_for


def tiny(data_dir) -> list[str]:
    """Small data for any GPT experiment (text or chat)."""
    return [f"paths.data_dir={data_dir}", "data.max_bytes=60000", "data.sequence_len=16", "data.batch_size=4", "callbacks.progress_bar=null"]


def tiny_text(data_dir) -> list[str]:
    return [*tiny(data_dir), "data.tokenizer_train_bytes=30000"]


def tiny_base(data_dir) -> list[str]:
    net = ["model.net.config.n_layer=1", "model.net.config.n_head=2", "model.net.config.n_embd=16"]
    return ["experiment=gpt_tiny", *tiny_text(data_dir), "data.vocab_size=300", "data.max_val_sequences=4", *net]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("gpt_data")


@pytest.fixture(scope="module")
def base_run(data_dir, tmp_path_factory):
    """4 optimizer steps of 2 accumulated micro-batches, validating every 4 micro-batches."""
    run_dir = tmp_path_factory.mktemp("gpt_base") / "run"
    overrides = [
        *tiny_base(data_dir), "trainer.max_steps=4", "trainer.accumulate_grad_batches=2",
        "trainer.val_check_interval=4", "trainer.log_every_n_steps=1", "callbacks.throughput.window_size=2",
    ]
    _, record = run_in_process(overrides, run_dir)
    return run_dir, record


def test_gpt_tiny_trains_and_records_everything(base_run):
    run_dir, record = base_run
    assert record["status"] == "completed" and record["experiment"] == "gpt_tiny"
    assert record["progress"]["global_step"] == 4  # optimizer steps, not micro-batches
    assert {"val/loss", "val/bpb", "val/bpb_best", "train/loss"} <= set(record["metrics"])
    assert record["optimized_metric"]["value"] == pytest.approx(record["metrics"]["val/bpb_best"])
    assert (run_dir / "tokenizer.json").is_file()
    with open(run_dir / "csv" / "metrics.csv") as handle:
        columns = set(next(csv.reader(handle)))
    assert {"train/device/items_per_sec", "train/device/flops_per_sec", "val/bpb"} <= columns
    checkpoint = torch.load(record["checkpoints"]["last"], weights_only=True)
    assert checkpoint["gpt"]["config"]["n_embd"] == 16 and "tokenizer" in checkpoint["gpt"]
    assert set(checkpoint["optimizer_states"][0]) == {"matrix", "embedding_head"}


def test_resume_continues_from_the_last_checkpoint(base_run, data_dir, tmp_path):
    _, record = base_run
    overrides = [*tiny_base(data_dir), "trainer.max_steps=6", "trainer.accumulate_grad_batches=2",
                 "trainer.val_check_interval=4", f"ckpt_path={record['checkpoints']['last']}"]
    _, resumed = run_in_process(overrides, tmp_path / "resumed")
    assert resumed["progress"]["global_step"] == 6


@pytest.mark.parametrize("precision", ["32", "bf16-mixed"])
def test_gpt_tiny_fast_dev_run(data_dir, tmp_path, precision):
    """bf16-mixed runs the autocast path (on CPU here; trainer=gpu uses it on CUDA)."""
    _, record = run_in_process([*tiny_base(data_dir), "debug=fdr", f"trainer.precision={precision}"], tmp_path / "run")
    assert record["status"] == "completed" and record["metrics"]["val/bpb"] > 0


@pytest.mark.gpu
def test_gpt_small_on_gpu_with_bf16_and_compile(data_dir, tmp_path):
    overrides = [
        "experiment=gpt_small", *tiny_text(data_dir), "data.vocab_size=512", "data.sequence_len=64", "data.num_workers=0",
        "model.net.config.n_layer=2", "trainer.max_steps=3", "trainer.accumulate_grad_batches=1",
        "trainer.val_check_interval=3", "trainer.log_every_n_steps=1", "callbacks.throughput.window_size=2",
    ]
    _, record = run_in_process(overrides, tmp_path / "run")
    assert record["status"] == "completed" and record["progress"]["global_step"] == 3
    assert record["metrics"]["val/bpb"] > 0


def test_gpt_small_fast_dev_run_on_cpu(data_dir, tmp_path):
    """The GPU recipe's code path on CPU: grouped-query attention, accumulation; a tiny net."""
    overrides = [
        "experiment=gpt_small", *tiny_text(data_dir), "data.vocab_size=320", "data.num_workers=0", "data.pin_memory=false",
        "trainer=cpu", "trainer.precision=32", "model.compile=false", "model.net.config.n_layer=1",
        "model.net.config.n_head=4", "model.net.config.n_kv_head=2", "model.net.config.n_embd=32",
        "trainer.accumulate_grad_batches=2", "debug=fdr",
    ]
    _, record = run_in_process(overrides, tmp_path / "run")
    assert record["status"] == "completed" and record["experiment"] == "gpt_small"


def test_gpt_sft_fast_dev_run_from_the_base_checkpoint(base_run, data_dir, tmp_path):
    _, base = base_run
    overrides = ["experiment=gpt_sft", *tiny(data_dir), "data.sequence_len=64", f"model.init_from={base['checkpoints']['last']}", "debug=fdr"]
    _, record = run_in_process(overrides, tmp_path / "run")
    assert record["status"] == "completed" and record["metrics"]["val/bpb"] > 0


def test_gpt_sft_as_typed_gets_its_base_model_from_the_run_store(base_run, data_dir, caplog):
    """model.base names the base run (experiment + overrides); base_run registered it in the store
    under the same hash, so it is reused, not trained again."""
    run_dir, base = base_run
    base_overrides = [o for o in base["overrides"] if not o.startswith("experiment=")]
    quoted = ",".join(f"'{o}'" for o in base_overrides)
    overrides = ["experiment=gpt_sft", *tiny(data_dir), "data.sequence_len=32", f"model.base.overrides=[{quoted}]", "debug=fdr"]
    with caplog.at_level("INFO"):
        _, record = run_in_process(overrides, run_dir.parent / "sft")
    assert record["status"] == "completed"
    assert f"reusing stored run {base['run_id']}" in caplog.text


def test_gpt_sft_needs_a_gpt_checkpoint(data_dir, tmp_path):
    with pytest.raises(UserError, match="add model.init_from="):
        run_in_process(["experiment=gpt_sft", *tiny(data_dir), "model.base=null", "debug=fdr"], tmp_path / "a")
    with pytest.raises(UserError, match="does not exist"):
        run_in_process(["experiment=gpt_sft", *tiny(data_dir), f"model.init_from={tmp_path}/none.ckpt"], tmp_path / "b")
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"net.conv.weight": torch.zeros(1)}}, foreign)
    with pytest.raises(UserError, match="is not a GPT checkpoint"):
        run_in_process(["experiment=gpt_sft", *tiny(data_dir), f"model.init_from={foreign}"], tmp_path / "c")


def test_net_that_does_not_match_the_checkpoint_is_refused(base_run):
    from lightning_modules.gpt.module import GPTLanguageModel
    from lightning_modules.gpt.nets import GPT, GPTConfig

    _, base = base_run
    wrong = GPT(GPTConfig(vocab_size=300, sequence_len=16, n_layer=2, n_head=2, n_embd=16))
    with pytest.raises(UserError, match="differs from the checkpoint"):
        GPTLanguageModel(wrong, None, None, init_from=base["checkpoints"]["last"])


def test_task_train_tokenizer(data_dir, tmp_path):
    overrides = ["experiment=gpt_tiny", "task=train_tokenizer", *tiny_text(data_dir), "data.vocab_size=290"]
    _, record = run_in_process(overrides, tmp_path / "run")
    metrics = record["metrics"]
    assert record["status"] == "completed" and metrics["tokenizer/vocab_size"] <= 290
    assert metrics["tokenizer/bytes_per_token"] > 1.0
    assert (tmp_path / "run" / "tokenizer.json").is_file()


def test_task_generate_with_and_without_cache(base_run, tmp_path, capsys):
    _, base = base_run
    texts = []
    for use_cache in (True, False):
        overrides = ["experiment=gpt_tiny", "task=generate", f"ckpt_path={base['checkpoints']['last']}",
                     "generation.prompt=import os", "generation.max_new_tokens=6", "generation.temperature=0",
                     f"generation.use_cache={use_cache}"]
        _, record = run_in_process(overrides, tmp_path / str(use_cache))
        texts.append(json.loads((tmp_path / str(use_cache) / "generations.json").read_text())["texts"])
        assert record["metrics"]["generate/new_tokens"] > 0
    assert texts[0] == texts[1] and texts[0][0].startswith("import os")
    assert texts[0][0] in capsys.readouterr().out


def test_task_chat_reads_until_eof(base_run, tmp_path, monkeypatch, capsys):
    _, base = base_run
    monkeypatch.setattr("sys.stdin", io.StringIO("hello\n\n/clear\nhow are you?\n"))
    overrides = ["experiment=gpt_sft", "task=chat", f"ckpt_path={base['checkpoints']['last']}", "generation.max_new_tokens=8"]
    _, record = run_in_process(overrides, tmp_path / "run")
    out = capsys.readouterr().out
    assert record["metrics"]["chat/turns"] == 2
    assert out.count("gpt> ") == 2 and "(conversation cleared)" in out


@pytest.mark.slow
def test_chat_from_the_command_line_exits_on_slash_exit(base_run, tmp_path):
    _, base = base_run
    args = ["experiment=gpt_sft", "task=chat", f"ckpt_path={base['checkpoints']['last']}", "generation.max_new_tokens=4"]
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args, f"paths.log_dir={tmp_path}"],
        input="what is json?\n/exit\nnever read\n", capture_output=True, text=True, timeout=timeout_for(2.5), cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "you> gpt> " in done.stdout and done.stdout.count("you> ") == 2


def test_chat_and_generate_need_a_checkpoint(tmp_path):
    for task in ("chat", "generate"):
        with pytest.raises(UserError, match=f"task={task} samples from a trained model: add ckpt_path="):
            run_in_process(["experiment=gpt_tiny", f"task={task}"], tmp_path / task)


LEGACY = ROOT / "tests" / "fixtures" / "legacy_gpt_tiny.ckpt"  # written by the GPT code before it became a package


def test_a_checkpoint_from_before_the_package_move_still_samples(tmp_path, monkeypatch, capsys):
    """Its embedded run config names the old code paths; the net is rebuilt from the "gpt" entry."""
    old = torch.load(LEGACY, weights_only=True)
    assert old["hylab"]["config"]["model"]["net"]["_target_"] == "lightning_modules.nets.gpt.GPT"
    overrides = ["experiment=gpt_tiny", "task=generate", f"ckpt_path={LEGACY}", "generation.prompt=def ",
                 "generation.max_new_tokens=6", "generation.temperature=0"]
    _, record = run_in_process(overrides, tmp_path / "generate")
    assert record["status"] == "completed" and record["metrics"]["generate/new_tokens"] > 0
    monkeypatch.setattr("sys.stdin", io.StringIO("hello\n"))
    _, record = run_in_process(["experiment=gpt_sft", "task=chat", f"ckpt_path={LEGACY}", "generation.max_new_tokens=4"], tmp_path / "chat")
    assert record["metrics"]["chat/turns"] == 1
