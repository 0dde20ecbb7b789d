"""The first steps of hybrid training, in short plain-torch loops (minutes even on a loaded CPU):
what a net learns in its first N steps, to find why a run does not start.

    python -m bench.hybrid_start vit --steps 60 --lr 2e-3 [hydra overrides ...]   # val acc after N steps
    python -m bench.hybrid_start vit --steps 60 --own-head model.net.mode=vit      # the ViT's own linear head, no fusion layer
    python -m bench.hybrid_start probe --steps 60                                  # probe on random / SupCon / CE encoders
    python -m bench.hybrid_start edl --steps 300                                   # EDL evidence functions against CE, small MLP

`vit` and `probe` compose `experiment=hybrid_ce` (or `hybrid_supcon`) with the overrides and use
its datamodule (mnist5k: 3600 training, 400 validation, 1000 test digits, batch 128, its
augmentation and normalization). AdamW, weight decay 0.05, one epoch (29 steps) of linear warm-up,
seed 1, one thread. `probe` uses the unit tests' tiny hybrid (tests/hybrid/conftest.py) with a
32-d projection: it trains it with SupCon (two views, tau = 0.1) or CE for N steps, then fits a
linear head (AdamW lr 1e-2, 300 steps of batch 128) on the frozen backbone output, the input
hybrid_supcon_probe's head reads. `edl` trains a 64-64-10 MLP (LayerNorm before the head) on
scikit-learn's 8x8 digits (1200 train / 597 test) with the EDL loss (MSE, KL annealed over 10
of 10 "epochs" of 30 steps) per evidence function, and with CE, 2 seeds each.
"""

import argparse
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import torch
import torch.nn.functional as F

from lightning_modules.hybrid import losses


def compose(experiment: str, overrides: list[str], folder: str):
    from tests.helpers import compose_run

    return compose_run([f"experiment={experiment}", *overrides], Path(folder) / "run")


def batches(loader):
    while True:
        yield from loader


def accuracy(net, dm, loader) -> float:
    net.eval()
    correct = count = 0
    with torch.no_grad():
        for x, y in loader:
            x, y = dm.transform_batch(x, y, train=False)
            correct += int((net(x).argmax(-1) == y).sum())
            count += len(y)
    net.train()
    return correct / count


def first_steps(args) -> None:
    import hydra

    with TemporaryDirectory() as folder:
        cfg = compose("hybrid_ce", args.overrides, folder)
    dm = hydra.utils.instantiate(cfg.data)
    dm.setup("fit")
    torch.manual_seed(1)
    net = hydra.utils.instantiate(cfg.model.net)
    if args.own_head:
        vit = net.backbone.vit
        net = torch.nn.Sequential(vit.vit, torch.nn.Linear(vit.num_features, cfg.data.num_classes))
    optimizer = torch.optim.AdamW(net.parameters(), args.lr, weight_decay=0.05)
    warm = len(dm.train_dataloader())
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: min(1, (t + 1) / warm))
    start, seen = time.time(), []
    stream = batches(dm.train_dataloader())
    for _ in range(args.steps):
        x, y = dm.transform_batch(*next(stream), train=True)
        loss = F.cross_entropy(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        seen.append(loss.item())
    tail = seen[-10:]
    print(f"| {' '.join(args.overrides) or '(hybrid_ce)'}{' own head' if args.own_head else ''} | lr {args.lr} | {args.steps} "
          f"| {sum(tail) / len(tail):.3f} | {accuracy(net, dm, dm.val_dataloader()):.3f} | {time.time() - start:.0f} s |", flush=True)


def features(net, dm, loader):
    net.eval()
    parts, labels = [], []
    with torch.no_grad():
        for x, y in loader:
            x, y = dm.transform_batch(x, y, train=False)
            parts.append(net.features(x))
            labels.append(y)
    return torch.cat(parts), torch.cat(labels)


def linear_probe(net, dm) -> float:
    train_z, train_y = features(net, dm, dm.train_dataloader())
    test_z, test_y = features(net, dm, dm.test_dataloader())
    head = torch.nn.Linear(train_z.shape[1], int(train_y.max()) + 1)
    optimizer = torch.optim.AdamW(head.parameters(), 1e-2, weight_decay=0.0)
    for _ in range(300):
        index = torch.randint(0, len(train_z), (128,))
        loss = F.cross_entropy(head(train_z[index]), train_y[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return float((head(test_z).argmax(-1) == test_y).float().mean())


def probe(args) -> None:
    import hydra

    from tests.hybrid.conftest import tiny

    with TemporaryDirectory() as folder:
        cfg = compose("hybrid_supcon", args.overrides, folder)
    dm = hydra.utils.instantiate(cfg.data)
    dm.setup("fit")
    for kind in ("random", "supcon", "ce"):
        torch.manual_seed(0)
        net = tiny(projection_dim=32)
        last = float("nan")
        if kind != "random":
            optimizer = torch.optim.AdamW(net.parameters(), 2e-3, weight_decay=0.05)
            stream = batches(dm.train_dataloader())
            for _ in range(args.steps):
                x, y = next(stream)
                first, _ = dm.transform_batch(x, y, True)
                second, _ = dm.transform_batch(x, y, True)
                if kind == "supcon":
                    z = net.features(torch.cat([first, second]))
                    loss = losses.supcon_loss(net.projection(z), torch.cat([y, y]), 0.1)
                else:
                    loss = F.cross_entropy(net(first), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                last = loss.item()
        print(f"| {kind} | {args.steps if kind != 'random' else 0} | {last:.3f} | {linear_probe(net, dm):.3f} |", flush=True)


def edl(args) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32)
    x = (x - x.mean(0)) / (x.std(0) + 1e-3)
    y = torch.tensor(digits.target)
    for kind in ("relu", "softplus", "exp", "ce"):
        for seed in range(2):
            torch.manual_seed(seed)
            net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.LayerNorm(64), torch.nn.Linear(64, 10))
            optimizer = torch.optim.Adam(net.parameters(), 1e-3)
            for step in range(args.steps):
                index = torch.randint(0, 1200, (64,))
                logits = net(x[index])
                epoch = step // max(1, args.steps // 10)
                loss = F.cross_entropy(logits, y[index]) if kind == "ce" else losses.edl_loss(logits, y[index], epoch, kind, "mse", 10, 1.0)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            with torch.no_grad():
                logits = net(x[1200:])
                acc = float((logits.argmax(-1) == y[1200:]).float().mean())
                dead = 0.0 if kind == "ce" else float((losses.evidence(logits, kind).sum(-1) == 0).float().mean())
            print(f"| {kind} | {seed} | {args.steps} | {acc:.3f} | {dead:.3f} |", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["vit", "probe", "edl"])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--own-head", action="store_true")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    {"vit": first_steps, "probe": probe, "edl": edl}[args.mode](args)


if __name__ == "__main__":
    sys.exit(main())
