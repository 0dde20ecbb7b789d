"""Train-step images/s of SpeedNet by memory layout and dtype, side by side in one process.

    uv run python -m bench.speed_layout                 # widths of fmnist_speed, and two others

One step = forward, cross-entropy, backward, SGD step on a batch of 28x28x1 images; NCHW or
channels_last, fp32 or bf16 autocast. Each setting runs `--warmup` then `--steps` steps, and
the settings alternate over `--rounds`; the table gives the median images/s per setting.
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from lightning_modules.image.nets.speednet import SpeedNet

SETTINGS = [("nchw", False), ("nchw", True), ("channels_last", False), ("channels_last", True)]


def images_per_second(net, batch: int, bf16: bool, steps: int, warmup: int) -> float:
    images, labels = torch.randn(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(net(images).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--widths", nargs="+", default=["16,32,64", "24,32,64,128", "32,64,128"])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch}")
    print("| widths | NCHW fp32 | NCHW bf16 | channels_last fp32 | channels_last bf16 | bf16 + channels_last / NCHW fp32 |")
    print("|---|---|---|---|---|---|")
    for widths in args.widths:
        shape = tuple(int(w) for w in widths.split(","))
        rates = {setting: [] for setting in SETTINGS}
        for _ in range(args.rounds):
            for layout, bf16 in SETTINGS:
                torch.manual_seed(0)
                net = SpeedNet(widths=shape, channels_last=layout == "channels_last")
                rates[(layout, bf16)].append(images_per_second(net, args.batch, bf16, args.steps, args.warmup))
        median = {setting: statistics.median(values) for setting, values in rates.items()}
        cells = " | ".join(f"{median[s]:.0f}" for s in SETTINGS)
        print(f"| {widths} | {cells} | {median[('channels_last', True)] / median[('nchw', False)]:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
