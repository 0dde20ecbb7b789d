"""task=speedrun: tokenizer -> base model -> chat fine-tune -> eval -> report card, one command
(nanochat's speedrun at CPU scale; `experiment=gpt_speedrun`).

Every stage is kept and found again by what it is made of, so the same command run again reuses
each finished stage:
- the tokenizer: the data cache (data_dir/gpt/cache/<corpus, vocabulary, budget>);
- the base model and the chat model: run-store entries (experiment + overrides, hylab/store.py);
- the evaluation: <store>/evals/<checkpoint sha256 + settings>/<task>.json, one file per task, so
  an interrupted evaluation resumes at the task it was on.
The report (report.md in the run dir) has bits per byte, the CORE-proxy table, bytes per token,
sample generations, a short chat, and throughput and wall time per stage.
"""

import hashlib
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import torch
from omegaconf import DictConfig

from hylab.instantiate import build
from hylab.records import atomic_write_text
from hylab.settings import parse_settings
from hylab.store import RunStore, compose_for, training_hash
from hylab.tasks import TaskResult
from lightning_modules.gpt.checkpoint import build_net, read_gpt_checkpoint
from lightning_modules.gpt.engine import generate_tokens
from lightning_modules.gpt.evaluation import core_metrics, core_table, evaluation_settings, log_to_loggers, run_benchmarks
from lightning_modules.gpt.settings import SpeedrunSettings

log = logging.getLogger("hylab")


def quoted_list(values: list[str]) -> str:
    return "[" + ",".join("'" + v.replace("'", "\\'") + "'" for v in values) + "]"


def stored_stage(store: RunStore, experiment: str, overrides: list[str], log_dir: str) -> tuple[dict, float, bool]:
    """(entry record, seconds here, reused?) of a run-store stage."""
    started = time.perf_counter()
    reused = store.find(training_hash(compose_for(experiment, overrides, log_dir))) is not None
    entry = store.get_or_train(experiment, overrides, log_dir)
    record_file = Path(entry.run_dir) / "metrics.json"
    wall = json.loads(record_file.read_text()).get("wall_time_s") if record_file.is_file() else None
    return {**entry.record, "checkpoint": str(entry.checkpoint), "wall_time_s": wall}, time.perf_counter() - started, reused


def tokens_per_second(run_dir: str) -> float | None:
    """The last training tokens/s the throughput monitor logged (csv logger)."""
    import csv

    path = Path(run_dir) / "csv" / "metrics.csv"
    if not path.is_file():
        return None
    values = []
    with open(path) as handle:
        for row in csv.DictReader(handle):
            if row.get("train/device/items_per_sec"):
                values.append(float(row["train/device/items_per_sec"]))
    return values[-1] if values else None


def samples_and_chat(base_ckpt: str, chat_ckpt: str, settings: SpeedrunSettings) -> tuple[list[str], list[tuple[str, str]]]:
    from lightning_modules.gpt.tasks import fit_to_context

    base = read_gpt_checkpoint(base_ckpt)
    net = build_net(base).eval()
    tok = base.tokenizer
    samples = []
    new = min(settings.max_new_tokens, net.config.context_len // 2)
    for prompt in settings.sample_prompts:
        ids = [tok.bos_id, *tok.encode(prompt)][-(net.config.context_len - new) :]
        row = generate_tokens(net, ids, new, stop_ids=[tok.bos_id], temperature=0.0, vocab_limit=tok.vocab_size)[0]
        samples.append(prompt + tok.decode(row, skip_special=True))
    chat = read_gpt_checkpoint(chat_ckpt)
    net, tok = build_net(chat).eval(), chat.tokenizer
    replies = []
    new = min(settings.max_new_tokens, net.config.context_len // 2)
    for question in settings.chat_prompts:
        ids = fit_to_context(tok, [{"role": "user", "content": question}], new, net.config.context_len)
        row = generate_tokens(net, ids, new, stop_ids=list(tok.special_ids), temperature=0.0, vocab_limit=tok.vocab_size)[0]
        replies.append((question, tok.decode(row, skip_special=True)))
    return samples, replies


def eval_key(checkpoint_sha: str, settings) -> str:
    return hashlib.sha256(json.dumps([checkpoint_sha, asdict(settings)], sort_keys=True, default=str).encode()).hexdigest()[:16]


def speedrun(cfg: DictConfig) -> TaskResult:
    settings = parse_settings(SpeedrunSettings, cfg.speedrun, "speedrun")
    eval_settings = evaluation_settings(cfg)
    if eval_settings.num_threads:
        torch.set_num_threads(eval_settings.num_threads)
    log_dir, store = str(cfg.paths.log_dir), RunStore(cfg.store.dir)
    base_overrides = [*settings.base_overrides, f"store.dir={cfg.store.dir}"]
    stages, started = {}, time.perf_counter()

    # 1. tokenizer (trained into the data cache on first use, reused after)
    from datamodules.gpt.tokenizer import describe, evaluate_tokenizer

    t0 = time.perf_counter()
    datamodule = build(compose_for(settings.base_experiment, base_overrides, log_dir).data)
    tokenizer = datamodule.train_tokenizer()
    tokenizer_metrics = evaluate_tokenizer(tokenizer, [doc.text for doc in datamodule.val_documents])
    stages["tokenizer"] = {"seconds": time.perf_counter() - t0, "note": describe(tokenizer_metrics)}

    # 2. base model, 3. chat fine-tune: run-store entries
    base, seconds, reused = stored_stage(store, settings.base_experiment, base_overrides, log_dir)
    stages["base"] = {"seconds": seconds, "reused": reused, "train_s": base.get("wall_time_s"), "tokens_per_s": tokens_per_second(base["run_dir"]),
                      "run_dir": base["run_dir"], "val/bpb": (base.get("metrics") or {}).get("val/bpb_best")}
    sft_overrides = [f"model.base.experiment={settings.base_experiment}", f"model.base.overrides={quoted_list(base_overrides)}",
                     *settings.sft_overrides, f"store.dir={cfg.store.dir}"]
    sft, seconds, reused = stored_stage(store, settings.sft_experiment, sft_overrides, log_dir)
    stages["sft"] = {"seconds": seconds, "reused": reused, "train_s": sft.get("wall_time_s"), "tokens_per_s": tokens_per_second(sft["run_dir"]),
                     "run_dir": sft["run_dir"], "val/bpb": (sft.get("metrics") or {}).get("val/bpb_best")}

    # 4. eval of the base model, one stored file per task
    t0 = time.perf_counter()
    eval_dir = Path(cfg.store.dir) / "evals" / eval_key(base["checkpoint_sha256"], eval_settings)
    reused = eval_dir.is_dir() and any(eval_dir.glob("*.json"))
    checkpoint = read_gpt_checkpoint(base["checkpoint"])
    net = build_net(checkpoint).to("cuda" if torch.cuda.is_available() else "cpu").eval()
    rows = run_benchmarks(net, checkpoint.tokenizer, eval_settings, eval_dir, show_progress=bool(cfg.trainer.get("enable_progress_bar", True)))
    stages["eval"] = {"seconds": time.perf_counter() - t0, "reused": reused, "dir": str(eval_dir)}

    # 5. report
    t0 = time.perf_counter()
    samples, chat = samples_and_chat(base["checkpoint"], sft["checkpoint"], settings)
    stages["report"] = {"seconds": time.perf_counter() - t0}
    total = time.perf_counter() - started
    metrics = {**core_metrics(rows), "speedrun/seconds": total, "speedrun/base_val_bpb": stages["base"]["val/bpb"],
               "speedrun/sft_val_bpb": stages["sft"]["val/bpb"], "tokenizer/bytes_per_token": tokenizer_metrics["tokenizer/bytes_per_token"]}
    metrics = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    report = render_report(cfg, settings, checkpoint, stages, rows, samples, chat, total)
    path = Path(cfg.paths.output_dir) / "report.md"
    atomic_write_text(path, report)
    print(report, flush=True)
    log_to_loggers(cfg, metrics)
    return TaskResult(metrics=metrics, checkpoints={"base": base["checkpoint"], "sft": sft["checkpoint"]},
                      extra={"report": str(path), "stages": stages})


def render_report(cfg, settings, checkpoint, stages, rows, samples, chat, total) -> str:
    c = checkpoint.config
    params = build_net(checkpoint).num_parameters()

    def fmt(value, pattern="{:.1f}"):
        try:
            return pattern.format(float(value))
        except (TypeError, ValueError):
            return "" if value is None else str(value)

    lines = [
        "# GPT speedrun report card", "",
        f"Base `{settings.base_experiment}` {' '.join(settings.base_overrides)} -> chat `{settings.sft_experiment}` "
        f"{' '.join(settings.sft_overrides)}; {params / 1e6:.2f}M parameters (n_layer {c.n_layer}, n_embd {c.n_embd}, "
        f"n_head {c.n_head}, context {c.sequence_len}, vocabulary {c.vocab_size}).", "",
        "## Stages", "", "| stage | this run s | reused | training s | tokens/s | val bpb |", "|---|---:|---|---:|---:|---:|",
    ]
    for name in ("tokenizer", "base", "sft", "eval", "report"):
        s = stages[name]
        lines.append(f"| {name} | {s['seconds']:.1f} | {'yes' if s.get('reused') else '' if 'reused' not in s else 'no'} | "
                     f"{fmt(s.get('train_s'))} | {fmt(s.get('tokens_per_s'), '{:.0f}')} | {fmt(s.get('val/bpb'), '{:.4f}')} |")
    lines += [f"| **total** | **{total:.1f}** | | | | |", "", f"Tokenizer: {stages['tokenizer']['note']}.", "",
              "## CORE-proxy (base model)", "",
              "Splits, prompt formats and few-shot counts differ from DCLM's CORE bundle: a proxy, not comparable with nanochat's numbers.", "",
              core_table(rows), "## Samples (base model, greedy)", ""]
    for text in samples:
        lines += ["```", text, "```", ""]
    lines += ["## Chat (fine-tuned model, greedy)", ""]
    for question, reply in chat:
        lines += [f"- **you:** {question}", f"  **gpt:** {reply.strip()}", ""]
    return "\n".join(lines) + "\n"
