"""GPT family benchmark: held-out bits per byte of gpt_tiny after a fixed CPU budget, beside xz
and zstd on the same held-out bytes; training tokens/s; KV-cache generation speed-up; tokenizer
bytes per token; and, on a GPU, gpt_small with bf16 + torch.compile.

    uv run python -m bench.gpt                              # Austen, 10 minutes of training
    uv run python -m bench.gpt --corpus python_docs --minutes 5
    uv run --with bpe-openai python -m bench.gpt            # + cl100k / o200k bytes per token

Training runs `run.py experiment=gpt_tiny` as a subprocess (the real CLI). Its step count is set
from a short calibration run so that training fills --minutes (the warm-down then ends on
time); trainer.max_time stops it regardless. Everything is written under bench/out/gpt.
"""

import argparse
import csv
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "gpt"
CORPUS_DATA = {"austen": "gpt_austen", "python_docs": "gpt_pydocs", "stdlib": "gpt_text"}


def run_py(args: list[str], log_dir: Path) -> dict:
    """`python run.py <args>`; returns its metrics.json."""
    command = [sys.executable, str(ROOT / "run.py"), *args, f"paths.log_dir={log_dir}", "callbacks.progress_bar=null"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"run.py {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    (record,) = [json.loads(p.read_text()) for p in log_dir.rglob("metrics.json")]
    return record


def last_logged(run_dir: Path, column: str) -> float | None:
    with open(Path(run_dir) / "csv" / "metrics.csv") as handle:
        values = [float(row[column]) for row in csv.DictReader(handle) if row.get(column)]
    return values[-1] if values else None


def train_tiny(data: str, minutes: float, extra: list[str]) -> dict:
    base = ["experiment=gpt_tiny", f"data={data}", "trainer.accelerator=cpu", *extra]
    shutil.rmtree(OUT / "calibrate", ignore_errors=True)
    calib = run_py([*base, "trainer.max_steps=12", "trainer.val_check_interval=1000000", "trainer.log_every_n_steps=1",
                    "callbacks.throughput.window_size=6", "callbacks.model_checkpoint=null", "callbacks.last_checkpoint=null", "+trainer.enable_checkpointing=false"],
                   OUT / "calibrate")
    tokens_per_s = last_logged(Path(calib["run_dir"]), "train/device/items_per_sec")
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(Path(calib["run_dir"]) / ".hydra" / "config.yaml")
    tokens_per_step = cfg.data.batch_size * cfg.data.sequence_len
    steps = max(20, int(0.92 * minutes * 60 * tokens_per_s / tokens_per_step))  # ~8% goes to validation
    every = max(1, steps // 4)
    shutil.rmtree(OUT / "train", ignore_errors=True)
    started = time.perf_counter()
    record = run_py([*base, f"trainer.max_steps={steps}", f"trainer.val_check_interval={every}",
                     f"+trainer.max_time=00:00:{math.ceil(minutes * 1.3):02d}:00"], OUT / "train")
    record["bench"] = {"steps_planned": steps, "calibrated_tokens_per_s": tokens_per_s, "tokens_per_step": tokens_per_step,
                       "train_wall_s": time.perf_counter() - started,
                       "train_tokens_per_s_logged": last_logged(Path(record["run_dir"]), "train/device/items_per_sec")}
    return record


def heldout_bpb(net, tokens, token_bytes, sequence_len: int) -> tuple[float, int]:
    """Bits per byte over the whole held-out token stream (the last, shorter window included), so
    the bytes counted are exactly the held-out documents' bytes."""
    import torch

    from lightning_modules.gpt.losses import next_token_loss

    nats, nbytes = 0.0, 0
    stream = torch.as_tensor(tokens.astype("int64"))
    with torch.inference_mode():
        for start in range(0, len(stream) - 1, sequence_len):
            window = stream[start : start + sequence_len + 1]
            targets = window[1:]
            per_token = next_token_loss(net(window[None, :-1]), targets[None], reduction="none")
            counted = token_bytes[targets] > 0
            nats += float(per_token[counted].double().sum())
            nbytes += int(token_bytes[targets].sum())
    return nats / (math.log(2) * nbytes), nbytes


def compressed_bits_per_byte(command: list[str], data: bytes) -> float:
    return 8 * len(subprocess.run(command, input=data, capture_output=True, check=True).stdout) / len(data)


def compressors(train: bytes, val: bytes) -> dict[str, float]:
    """Bits per byte of the held-out bytes; 'given train' = size(train + val) - size(train), the
    compressor's cost of the held-out text after it has seen the training text (as the model has)."""
    results = {}
    for name, command in (("xz -9", ["xz", "-9", "-c"]), ("zstd -19", ["zstd", "-19", "-c", "-q"])):
        if shutil.which(command[0]) is None:
            results[name] = float("nan")
            continue
        results[name] = compressed_bits_per_byte(command, val)
    if shutil.which("xz"):
        both = len(subprocess.run(["xz", "-9e", "-c"], input=train + val, capture_output=True, check=True).stdout)
        alone = len(subprocess.run(["xz", "-9e", "-c"], input=train, capture_output=True, check=True).stdout)
        results["xz -9e given train"] = 8 * (both - alone) / len(val)
    return results


def generation_speed(net, prompt: list[int], new_tokens: int, num_samples: int) -> dict:
    from lightning_modules.gpt.engine import generate_tokens

    timings, outputs = {}, {}
    for use_cache in (True, False):
        started = time.perf_counter()
        outputs[use_cache] = generate_tokens(net, prompt, new_tokens, temperature=0.0, num_samples=num_samples, use_cache=use_cache)
        timings[use_cache] = time.perf_counter() - started
    return {
        "new_tokens": new_tokens, "rows": num_samples, "prompt_tokens": len(prompt),
        "cache_s": timings[True], "no_cache_s": timings[False], "speedup": timings[False] / timings[True],
        "identical": outputs[True] == outputs[False],
    }


def gpu_small(steps: int) -> str:
    import torch

    if not torch.cuda.is_available():
        return "not measured: no GPU"
    record = run_py(["experiment=gpt_small", f"trainer.max_steps={steps}", "trainer.accumulate_grad_batches=1",
                     "trainer.val_check_interval=1000000", "trainer.log_every_n_steps=5", "data.vocab_size=8192",
                     "data.tokenizer_train_bytes=5000000"], OUT / "gpu")
    run_dir = Path(record["run_dir"])
    tps, mfu = last_logged(run_dir, "train/device/items_per_sec"), last_logged(run_dir, "train/device/mfu")
    return f"{tps:,.0f} tokens/s, MFU {mfu if mfu is None else f'{mfu:.1%}'} ({torch.cuda.get_device_name()}, bf16 + compile)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", choices=sorted(CORPUS_DATA), default="austen")
    parser.add_argument("--minutes", type=float, default=10.0, help="CPU training budget")
    parser.add_argument("--gpu-steps", type=int, default=200)
    parser.add_argument("--generation-rows", type=int, nargs="+", default=[1], help="batch sizes of the KV-cache comparison")
    parser.add_argument("--reuse", action="store_true", help="evaluate the last bench training run again, without training")
    parser.add_argument("overrides", nargs="*", help="extra run.py overrides for the gpt_tiny run")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)

    import numpy as np
    import torch

    from datamodules.gpt.tokenizer import evaluate_tokenizer
    from lightning_modules.gpt.checkpoint import build_net, read_gpt_checkpoint

    if args.reuse:
        record = json.loads((OUT / "train_record.json").read_text())
    else:
        record = train_tiny(CORPUS_DATA[args.corpus], args.minutes, args.overrides)
        (OUT / "train_record.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    checkpoint = read_gpt_checkpoint(record["checkpoints"]["last"])
    net = build_net(checkpoint).eval()
    cfg = json.loads(json.dumps(torch.load(record["checkpoints"]["last"], weights_only=True)["hylab"]["config"]))
    token_dir = Path(cfg["paths"]["data_dir"]) / "gpt" / "cache"
    (val_file,) = [p for p in token_dir.glob(f"*/{checkpoint.tokenizer.fingerprint()}/val.bin")]
    (train_file,) = [val_file.with_name("train.bin")]
    dtype = json.loads((val_file.parent / "meta.json").read_text())["dtype"]
    tokenizer = checkpoint.tokenizer
    val_tokens = np.fromfile(val_file, dtype=dtype)
    bpb, counted = heldout_bpb(net, val_tokens, torch.from_numpy(tokenizer.token_bytes), checkpoint.config.sequence_len)

    from datamodules.gpt.corpus import load_documents, split_documents

    data_cfg = cfg["data"]
    train_docs, val_docs = split_documents(
        load_documents(data_cfg["source"], data_cfg["data_dir"], data_cfg["paths"]), data_cfg["val_fraction"], data_cfg["max_bytes"]
    )
    val_bytes = "".join(d.text for d in val_docs).encode("utf-8")
    train_bytes = "".join(d.text for d in train_docs).encode("utf-8")
    assert counted == len(val_bytes), (counted, len(val_bytes))
    packed = compressors(train_bytes, val_bytes)
    tokenizer_metrics = evaluate_tokenizer(tokenizer, [d.text for d in val_docs])
    prompt = [tokenizer.bos_id, *tokenizer.encode("It is a truth universally acknowledged")]
    speeds = [generation_speed(net, prompt, 256, rows) for rows in args.generation_rows]
    gpu = gpu_small(args.gpu_steps)

    bench = record["bench"]
    lines = [
        f"corpus: {args.corpus}; held-out: {len(val_docs)} documents, {len(val_bytes):,} bytes; "
        f"training text {len(train_bytes):,} bytes ({train_file.stat().st_size // np.dtype(dtype).itemsize:,} tokens)",
        f"gpt_tiny: {net.num_parameters() / 1e6:.2f}M parameters, {record['progress']['global_step']} steps x "
        f"{bench['tokens_per_step']} tokens in {bench['train_wall_s'] / 60:.1f} min wall (run.py, 2-core CPU)",
        "",
        f"{'held-out bits per byte':<32}{'bpb':>8}{'vs gpt_tiny':>14}",
        f"{'gpt_tiny':<32}{bpb:>8.3f}{1.0:>13.2f}x",
    ]
    lines += [f"{name:<32}{value:>8.3f}{value / bpb:>13.2f}x" for name, value in packed.items()]
    lines += [
        "",
        f"training throughput (CPU): {bench['train_tokens_per_s_logged']:,.0f} tokens/s (ThroughputMonitor, last window); "
        f"calibration {bench['calibrated_tokens_per_s']:,.0f} tokens/s",
        f"tokenizer: {tokenizer_metrics['tokenizer/bytes_per_token']:.3f} bytes/token on held-out text (vocab {tokenizer.vocab_size})"
        + "".join(f"; {k.rsplit('_token_', 1)[-1]} {v:.3f}" for k, v in tokenizer_metrics.items() if "_token_" in k)
        + ("" if any("_token_" in k for k in tokenizer_metrics) else "; no offline reference tokenizer installed"),
    ]
    for s in speeds:
        lines.append(
            f"generation, {s['new_tokens']} new tokens x {s['rows']} row(s), greedy: KV cache {s['cache_s']:.2f} s, "
            f"no cache {s['no_cache_s']:.2f} s -> {s['speedup']:.1f}x faster, identical tokens: {s['identical']}"
        )
    lines.append(f"gpt_small on GPU: {gpu}")
    text = "\n".join(lines)
    print(text)
    results = {"bpb": bpb, "compressors": packed, "train": bench, "generation": speeds, "gpu": gpu,
               "tokenizer": tokenizer_metrics, "run_dir": record["run_dir"], "heldout_bytes": len(val_bytes)}
    (OUT / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (OUT / "results.txt").write_text(text + "\n")


if __name__ == "__main__":
    main()
