"""Train-step throughput (images/s) of DeiT students: forward, loss on both heads, backward, AdamW step.

    uv run python -m bench.deit                                   # CPU, fp32, eager: DeiT-Tiny and DeiT-micro
    uv run python -m bench.deit --device cuda --precision bf16 --compile   # the GPU path

The GPU path is what `run.py ... hardware=gpu model.compile=true` runs: bf16 autocast (weights and
optimizer in fp32), the net compiled with torch.compile, fused SDPA attention, fused AdamW.
Prints one markdown row per configuration; configurations run side by side in one process.
"""

import argparse
import time

import torch
import torch.nn.functional as F

from lightning_modules.image.nets.deit import deit


def train_step_rate(net, images, labels, precision: str = "fp32", compile: bool = False, steps: int = 10, warmup: int = 3) -> float:
    """Images per second over `steps` timed train steps, after `warmup` untimed ones (compilation happens there)."""
    device = images.device
    net = net.to(device).train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, fused=device.type == "cuda")
    model = torch.compile(net) if compile else net
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

    def step():
        with autocast:
            cls_logits, dist_logits = model(images, separate_heads=True)
            loss = 0.5 * F.cross_entropy(cls_logits, labels) + 0.5 * F.cross_entropy(dist_logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * images.shape[0] / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--sizes", nargs="+", default=["tiny", "micro"])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--image", default="28x1", help="<size>x<channels>: 28x1 (MNIST-like) or 32x3 (CIFAR-like)")
    parser.add_argument("--patch-size", type=int, default=4)
    args = parser.parse_args()
    size, chans = (int(v) for v in args.image.split("x"))
    device = torch.device(args.device)
    torch.manual_seed(0)
    images = torch.randn(args.batch_size, chans, size, size, device=device)
    labels = torch.randint(0, 10, (args.batch_size,), device=device)
    print(f"threads {torch.get_num_threads()}, device {device}, precision {args.precision}, compile {args.compile}")
    print("| net | input | patch | tokens | batch | train images/s |\n|---|---|---|---|---|---|")
    for name in args.sizes:
        net = deit(name, img_size=size, patch_size=args.patch_size, in_chans=chans, num_classes=10)
        rate = train_step_rate(net, images, labels, args.precision, args.compile, steps=args.steps)
        tokens = (size // args.patch_size) ** 2
        print(f"| deit_{name} | {size}x{size}x{chans} | {args.patch_size} | {tokens}+2 | {args.batch_size} | {rate:.1f} |", flush=True)


if __name__ == "__main__":
    main()
