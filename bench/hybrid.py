"""Measurements of the hybrid family on trained checkpoints and side-by-side timings.

    python -m bench.hybrid throughput                  # params + train images/s of the ablation nets (one process)
    python -m bench.hybrid tome --ckpt <vit-only run>.ckpt [--r 0 1 2 4 8]
    python -m bench.hybrid uncertainty --ckpt <edl>.ckpt --baseline <ce>.ckpt   # misclassification + OOD AUROC
    python -m bench.hybrid knn --ckpt <adaface>.ckpt --ckpt <ce>.ckpt           # embedding kNN accuracy
    python -m bench.hybrid sam                         # SAM, ASAM / AdamW train-step rate ratios (one process)
    python -m bench.hybrid sharpness --ckpt <run>.ckpt # loss at w and at SAM's / ASAM's ascent point

The data comes from each checkpoint's embedded config (the same splits and normalization);
OOD images (Fashion-MNIST for an MNIST model, MNIST-5k for a Fashion-MNIST one) are normalized
with the in-distribution statistics. Timings interleave the variants in one process and report
the median of per-round ratios, by wall clock and by this process's CPU time. Prints markdown rows.
"""

import argparse
import copy
import sys
import time
from functools import partial

import torch
import torch.nn.functional as F

from hylab.checkpoints import load_net_and_config
from hylab.errors import UserError
from lightning_modules.hybrid import losses
from lightning_modules.hybrid.metrics import knn_accuracy, max_softmax_uncertainty, misclassification_auroc, ood_auroc
from lightning_modules.hybrid.nets.backbone import hybrid_net, parameter_counts

TINY = dict(num_classes=10, in_chans=1, fusion_dim=128,
            cnn=dict(name="convnextv2_atto", drop_path_rate=0.0, kwargs=dict(patch_size=1, depths=[1, 1, 1, 1], dims=[16, 32, 64, 128])),
            vit=dict(name="vit_tiny_patch16_224", drop_path_rate=0.2,
                     kwargs=dict(img_size=28, patch_size=4, embed_dim=64, depth=4, num_heads=2, mlp_ratio=2.0)))


def datamodule(config: dict, source: str | None = None):
    from hydra.utils import instantiate

    data = dict(config["data"])
    if source:
        data.update(source=source, test_fraction=0.2 if source in ("mnist5k", "digits") else None)
    dm = instantiate(data, _convert_="all")
    dm.setup("test")
    return dm


def batches(dm, split: str, limit: int | None = None, mean=None, std=None):
    images, labels = dm.datasets[split].images, dm.datasets[split].labels
    if limit:
        images, labels = images[:limit], labels[:limit]
    x = images.float() / 255.0
    m = (dm.mean if mean is None else mean)[None, :, None, None]
    s = (dm.std if std is None else std)[None, :, None, None]
    return (x - m) / s, labels


@torch.no_grad()
def outputs(net, x, chunk: int = 500):
    net.eval()
    feats = [net.features(x[i:i + chunk]) for i in range(0, len(x), chunk)]
    z = torch.cat(feats)
    return z, net.head(z)


def rates(fn, repeats: int) -> tuple[float, float]:
    """(calls per wall second, calls per CPU second of this process). On a shared machine the
    CPU-time rate moves far less with other jobs' load than the wall-clock one."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        fn()
    return repeats / (time.perf_counter() - wall), repeats / (time.process_time() - cpu)


def median(values):
    return sorted(values)[len(values) // 2]


def side_by_side(steps: dict, rounds: int, repeats: int, base: str) -> dict:
    """Interleaved rounds of every step function; per round, each rate relative to `base`'s in the
    same round (so a load change between rounds cancels). Returns medians per name:
    (wall rate, CPU rate, wall ratio, CPU ratio)."""
    per_round = []
    for _ in range(rounds):
        per_round.append({name: rates(step, repeats) for name, step in steps.items()})
    out = {}
    for name in steps:
        out[name] = (median([r[name][0] for r in per_round]), median([r[name][1] for r in per_round]),
                     median([r[name][0] / r[base][0] for r in per_round]), median([r[name][1] / r[base][1] for r in per_round]))
    return out


def train_step(model, opt, x, y, perturb=None):
    """One cross-entropy training step on (x, y), through SAM's two passes when `perturb` is given;
    run once here so the timed calls start warm."""
    def step():
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        if perturb is not None:
            perturb.ascend()
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            perturb.restore()
        opt.step()
    step()
    return step


def throughput(args):
    torch.manual_seed(0)
    x, y = torch.randn(args.batch, 1, 28, 28), torch.randint(0, 10, (args.batch,))
    configs = {"cnn": dict(mode="cnn"), "vit": dict(mode="vit"), "concat": dict(mode="concat"), "gated": dict(mode="gated"),
               "gated+cbam": dict(mode="gated", cbam=True), "gated+tokenlearner8": dict(mode="gated", token_learner=dict(tokens=8)),
               "gated+cbam+tokenlearner8": dict(mode="gated", cbam=True, token_learner=dict(tokens=8))}
    nets = {name: hybrid_net(**TINY, **cfg) for name, cfg in configs.items()}
    steps = {name: train_step(net, torch.optim.AdamW(net.parameters(), 1e-3), x, y) for name, net in nets.items()}
    results = side_by_side(steps, args.rounds, args.repeats, "gated")
    print("| net | params | train images/s (wall, median) | train images per CPU-s | vs gated (wall) | vs gated (CPU) |\n|---|---|---|---|---|---|")
    for name, (wall, cpu, wall_ratio, cpu_ratio) in results.items():
        print(f"| {name} | {parameter_counts(nets[name])[1] / 1e3:.0f} k | {wall * args.batch:.0f} | {cpu * args.batch:.0f} | "
              f"{wall_ratio:.2f} | {cpu_ratio:.2f} |")


def tome(args):
    net, config = load_net_and_config(args.ckpt, "--ckpt")
    net.eval()
    dm = datamodule(config)
    x, y = batches(dm, "test", args.limit)
    stream = net.backbone.vit
    variants = [(r, p) for p in (True, False) for r in args.r if r or p]
    accuracy, left, steps = {}, {}, {}
    for r, proportional in variants:
        stream.tome_r, stream.tome_proportional = r, proportional
        _, logits = outputs(net, x)
        accuracy[r, proportional] = (logits.argmax(-1) == y).float().mean().item()
        left[r, proportional] = int(stream.last_sizes.shape[1]) if r else 1 + stream.vit.patch_embed.num_patches

        @torch.no_grad()
        def step(r=r, proportional=proportional):
            stream.tome_r, stream.tome_proportional = r, proportional
            net(x[: args.batch])
        steps[r, proportional] = step
    results = side_by_side(steps, args.rounds, args.repeats, (0, True))
    print("| r | proportional | tokens left | test acc | inference images/s (wall) | images per CPU-s | speed-up (wall) | speed-up (CPU) |")
    print("|---|---|---|---|---|---|---|---|")
    for key, (wall, cpu, wall_ratio, cpu_ratio) in results.items():
        r, proportional = key
        print(f"| {r} | {proportional if r else '-'} | {left[key]} | {accuracy[key]:.4f} | {wall * args.batch:.0f} | "
              f"{cpu * args.batch:.0f} | {wall_ratio:.2f} | {cpu_ratio:.2f} |")


def uncertainty(args):
    print("| model | test acc | misclassification AUROC | OOD AUROC | score |\n|---|---|---|---|---|")
    for path in [args.ckpt, args.baseline]:
        if not path:
            continue
        net, config = load_net_and_config(path, "--ckpt")
        dm = datamodule(config)
        x, y = batches(dm, "test", args.limit)
        out_source = "fashion_mnist" if config["data"]["source"] != "fashion_mnist" else "mnist5k"
        ood = datamodule(config, out_source)
        xo, _ = batches(ood, "test", args.limit, dm.mean, dm.std)
        _, logits = outputs(net, x)
        _, logits_out = outputs(net, xo)
        edl = config["model"]["loss"]["name"] == "edl"
        if edl:
            kind = config["model"]["loss"]["edl"]["evidence"]
            score, score_out = losses.dirichlet(logits, kind)[2], losses.dirichlet(logits_out, kind)[2]
        else:
            score, score_out = max_softmax_uncertainty(logits), max_softmax_uncertainty(logits_out)
        pred = logits.argmax(-1)
        print(f"| {config['model']['loss']['name']} | {(pred == y).float().mean():.4f} | {misclassification_auroc(score, pred, y):.4f} | "
              f"{ood_auroc(score, score_out):.4f} ({config['data']['source']} vs {out_source}) | {'u = K/S' if edl else '1 - max softmax'} |")


def knn(args):
    print("| model | test acc (head) | kNN acc (k=20, cosine) |\n|---|---|---|")
    for path in args.ckpt:
        net, config = load_net_and_config(path, "--ckpt")
        dm = datamodule(config)
        xt, yt = batches(dm, "train")
        x, y = batches(dm, "test", args.limit)
        zt, _ = outputs(net, xt)
        z, logits = outputs(net, x)
        print(f"| {config['model']['loss']['name']} | {(logits.argmax(-1) == y).float().mean():.4f} | {knn_accuracy(zt, yt, z, y, k=20):.4f} |")


def sam(args):
    from lightning_modules.hybrid.optimizers import SAM

    torch.manual_seed(0)
    x, y = torch.randn(args.batch, 1, 28, 28), torch.randint(0, 10, (args.batch,))
    net = hybrid_net(**TINY, mode="gated")
    steps = {}
    for name, adaptive in (("AdamW", None), ("SAM(AdamW)", False), ("ASAM(AdamW)", True)):
        model = copy.deepcopy(net)
        perturb = SAM(model.parameters(), 0.05, adaptive=adaptive) if adaptive is not None else None
        steps[name] = train_step(model, torch.optim.AdamW(model.parameters(), 1e-3), x, y, perturb)
    results = side_by_side(steps, args.rounds, args.repeats, "AdamW")
    print("| optimizer | steps/s (wall, median) | steps per CPU-s | vs AdamW (wall) | vs AdamW (CPU) |\n|---|---|---|---|---|")
    for name, (wall, cpu, wall_ratio, cpu_ratio) in results.items():
        print(f"| {name} | {wall:.2f} | {cpu:.2f} | {wall_ratio:.2f} | {cpu_ratio:.2f} |")


def sharpness(args):
    """Loss at w and at SAM's / ASAM's ascent point w + eps on one training batch, at a fresh init
    of the checkpoint's net and at its trained weights, and where ||g|| sits (which parameter)."""
    from hylab.checkpoints import build_checked_net
    from lightning_modules.hybrid.optimizers import SAM

    trained, config = load_net_and_config(args.ckpt, "--ckpt")
    dm = datamodule(config)
    dm.setup("fit")
    x, y = batches(dm, "train", args.batch)
    torch.manual_seed(0)
    fresh = build_checked_net(config["model"]["net"], args.ckpt, "--ckpt")
    print("| weights | ascent | rho | loss at w | loss at w + eps | largest share of the ascent norm |\n|---|---|---|---|---|---|")
    for label, net in (("init", fresh), ("trained", trained)):
        net.eval()  # no drop-path noise: both losses are of the same function
        for adaptive, rho in [(False, r) for r in args.rho] + [(True, r) for r in args.asam_rho]:
            net.zero_grad()
            loss = F.cross_entropy(net(x), y)
            loss.backward()
            perturb = SAM(net.parameters(), rho, adaptive)
            norm = perturb.ascend()
            with torch.no_grad():
                perturbed = F.cross_entropy(net(x), y).item()
            shares = {name: float(((p.abs() * p.grad if adaptive else p.grad).norm() / norm) ** 2)
                      for name, p in net.named_parameters() if p.grad is not None}
            top = max(shares, key=shares.get)
            perturb.restore()
            print(f"| {label} | {'ASAM' if adaptive else 'SAM'} | {rho} | {loss.item():.3f} | {perturbed:.3f} | {top} {shares[top]:.2f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["throughput", "tome", "uncertainty", "knn", "sam", "sharpness"])
    parser.add_argument("--ckpt", action="append")
    parser.add_argument("--baseline")
    parser.add_argument("--r", type=int, nargs="+", default=[0, 1, 2, 4, 8])
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--rho", type=float, nargs="+", default=[0.001, 0.01, 0.05])
    parser.add_argument("--asam-rho", type=float, nargs="+", default=[0.05, 0.5])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.what in ("tome", "uncertainty", "sharpness"):
        args.ckpt = args.ckpt[0] if args.ckpt else None
    torch.set_num_threads(max(1, torch.get_num_threads()))
    try:
        {"throughput": throughput, "tome": tome, "uncertainty": uncertainty, "knn": knn, "sam": sam, "sharpness": sharpness}[args.what](args)
    except UserError as err:  # a bad --ckpt (or setting): one line, not a traceback
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
