"""Measurements behind bench.hybrid_levers: the ToMe curve and the fusion gate's statistics.

ToMe: inference images/s of the ViT stream with r tokens merged per block against the same net
at r = 0 (timm's own fused forward), interleaved in one process, across token counts (patch 4:
49 tokens, patch 2: 196) and widths, untrained nets for speed (merging costs the same whatever
the weights) and the trained checkpoints for accuracy.

Gate: the gated fusion's per-image gate a = sigma(W2 ReLU(W1 [F_cnn || F_vit])) averaged over
each stream's channels, when the image reaching one stream is corrupted (Gaussian noise or an
occluded centre) and the other stream sees the clean image; accuracy of gated and concat nets
under the same corruptions.
"""

import statistics

import torch

from bench.hybrid import TINY, batches, datamodule, outputs, side_by_side
from lightning_modules.hybrid.nets.backbone import hybrid_net
from lightning_modules.hybrid.nets.streams import pooled


# -- ToMe -----------------------------------------------------------------------------------------
def vit_net(patch: int, width: int, depth: int = 4):
    vit = dict(TINY["vit"], kwargs=dict(TINY["vit"]["kwargs"], patch_size=patch, embed_dim=width, depth=depth,
                                        num_heads=max(1, width // 32)))
    return hybrid_net(**dict(TINY, vit=vit), mode="vit")


def merge_r(net, share: float) -> int:
    """Tokens merged per block so that `share` of the patch tokens are gone after the last block."""
    stream = net.backbone.vit
    return round(share * stream.vit.patch_embed.num_patches / len(stream.vit.blocks))


@torch.no_grad()
def tokens_left(net, x, r: int) -> int:
    stream = net.backbone.vit
    if r == 0:
        return stream.vit.patch_embed.num_patches + stream.vit.num_prefix_tokens
    stream.tome_r = r
    net.eval()(x[:2])
    stream.tome_r = 0
    return int(stream.last_sizes.shape[1])


def speed_curve(net, x, shares, rounds: int, repeats: int) -> list[dict]:
    """One row per merge share: r, tokens left, inference images/s and speed-up against r = 0
    (wall and CPU time, medians of per-round ratios)."""
    stream = net.backbone.vit
    net.eval()
    rs = {share: merge_r(net, share) for share in shares}
    steps = {}
    for share, r in rs.items():
        @torch.no_grad()
        def step(r=r):
            stream.tome_r = r
            net(x)
        steps[share] = step
        step()  # warm
    timed = side_by_side(steps, rounds, repeats, shares[0])
    stream.tome_r = 0
    return [dict(share=share, r=rs[share], tokens=tokens_left(net, x, rs[share]), images_s=timed[share][0] * len(x),
                 speedup=timed[share][2], speedup_cpu=timed[share][3]) for share in shares]


@torch.no_grad()
def accuracy_at(net, x, y, r: int) -> float:
    net.backbone.vit.tome_r = r
    _, logits = outputs(net, x)
    net.backbone.vit.tome_r = 0
    return (logits.argmax(-1) == y).float().mean().item()


def speed_curves(args) -> dict:
    """{(patch, width): speed rows}, measured, or read back from --speed-json when that file exists
    (so the accuracy half can be redone without re-timing)."""
    import json
    from pathlib import Path

    saved = Path(args.speed_json) if args.speed_json else None
    if saved and saved.is_file():
        return {tuple(int(v) for v in key.split("x")): rows for key, rows in json.loads(saved.read_text()).items()}
    torch.manual_seed(0)
    x = torch.randn(args.batch, 1, 28, 28)
    curves = {(patch, width): speed_curve(vit_net(patch, width), x, args.merge, args.rounds, args.repeats)
              for patch in args.patches for width in args.widths}
    if saved:
        saved.write_text(json.dumps({f"{p}x{w}": rows for (p, w), rows in curves.items()}, indent=1))
    return curves


def tome_report(args, ckpts: list[tuple[int, str]]) -> None:
    from hylab.checkpoints import load_net_and_config

    curves = speed_curves(args)
    print("| patch | tokens | width | merge share | r | tokens after last block | images/s (wall) | speed-up (wall) | speed-up (CPU) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (patch, width), rows in curves.items():
        for row in rows:
            print(f"| {patch} | {(28 // patch) ** 2} | {width} | {row['share']:.1f} | {row['r']} | {row['tokens']} | "
                  f"{row['images_s']:.0f} | {row['speedup']:.2f} | {row['speedup_cpu']:.2f} |")
    accuracy = {}
    for seed, path in ckpts:
        net, config = load_net_and_config(path, "--ckpt")
        x_test, y_test = batches(datamodule(config), "test", args.limit)
        accuracy[seed] = {share: accuracy_at(net, x_test, y_test, merge_r(net, share)) for share in args.merge}
    if accuracy:
        print(f"\n| merge share | test acc, seeds {' / '.join(map(str, accuracy))} | mean ± sd | change vs r = 0 (mean) |\n|---|---|---|---|")
        for share in args.merge:
            values = [accuracy[seed][share] for seed in accuracy]
            base = statistics.mean(accuracy[seed][args.merge[0]] for seed in accuracy)
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            print(f"| {share:.1f} | {' / '.join(f'{v:.4f}' for v in values)} | {statistics.mean(values):.4f} ± {sd:.4f} | "
                  f"{statistics.mean(values) - base:+.4f} |")
    if args.png:
        plot_tome(curves, accuracy, args.merge, args.png)
        print(f"\nplot: {args.png}")


def plot_tome(curves: dict, accuracy: dict, shares, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for (patch, width), rows in curves.items():
        left.plot([r["share"] for r in rows], [r["speedup"] for r in rows], marker="o", label=f"{(28 // patch) ** 2} tokens, width {width}")
    left.axhline(1.3, color="grey", linestyle="--", linewidth=1)
    left.set(xlabel="share of patch tokens merged by the last block", ylabel="inference speed-up vs r = 0 (wall)", title="ToMe speed (ViT, 4 blocks)")
    left.legend(fontsize=8)
    if accuracy:
        means = [statistics.mean(accuracy[s][share] for s in accuracy) for share in shares]
        sds = [statistics.stdev([accuracy[s][share] for s in accuracy]) if len(accuracy) > 1 else 0.0 for share in shares]
        right.errorbar(shares, means, yerr=sds, marker="o", capsize=3, label=f"trained, 196 tokens, width 64 ({len(accuracy)} seeds)")
        right.axhline(means[0] - 0.01, color="grey", linestyle="--", linewidth=1, label="1 point below r = 0")
        right.legend(fontsize=8)
    right.set(xlabel="share of patch tokens merged by the last block", ylabel="test accuracy (mnist5k)", title="ToMe accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- gated fusion ---------------------------------------------------------------------------------
@torch.no_grad()
def fused(backbone, x_cnn: torch.Tensor, x_vit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(fused embedding, per-image mean gate of each stream (B, 2)) with each stream fed its own
    input; a concat backbone reports gates of 1."""
    z = torch.cat([pooled(backbone.cnn, x_cnn), backbone.vit(x_vit)], dim=1)
    alpha = backbone.gate(z) if backbone.gate is not None else torch.ones_like(z)
    cnn_dim = backbone.stream_dims[0]
    gates = torch.stack([alpha[:, :cnn_dim].mean(1), alpha[:, cnn_dim:].mean(1)], dim=1)
    return backbone.norm(backbone.proj(z * alpha)), gates


def corrupt(x: torch.Tensor, kind: str, background: float, generator: torch.Generator) -> torch.Tensor:
    if kind == "noise":  # in normalized units: the clean digits have sd 1
        return x + 1.5 * torch.randn(x.shape, generator=generator)
    if kind == "occlude":  # the centre 14x14 set to the background value
        out = x.clone()
        out[..., 7:21, 7:21] = background
        return out
    return x


CONDITIONS = [("clean", None, None), ("noise", "noise", "cnn"), ("noise", "noise", "vit"), ("occlude", "occlude", "cnn"), ("occlude", "occlude", "vit")]


@torch.no_grad()
def gate_statistics(net, x: torch.Tensor, y: torch.Tensor, background: float, chunk: int = 500) -> list[dict]:
    """Per condition (clean; one stream's input corrupted): accuracy, mean gate per stream, and,
    per image against its own clean gates, the share of images whose corrupted stream's gate fell."""
    net.eval()
    results, clean_gates = [], None
    for name, kind, stream in CONDITIONS:
        generator = torch.Generator().manual_seed(0)
        logits, gates = [], []
        for i in range(0, len(x), chunk):
            xb = x[i:i + chunk]
            bad = corrupt(xb, kind, background, generator) if kind else xb
            e, g = fused(net.backbone, bad if stream == "cnn" else xb, bad if stream == "vit" else xb)
            logits.append(net.head(e))
            gates.append(g)
        logits, gates = torch.cat(logits), torch.cat(gates)
        if clean_gates is None:
            clean_gates = gates
        column = {"cnn": 0, "vit": 1}.get(stream)
        fell = (gates[:, column] < clean_gates[:, column]).float().mean().item() if column is not None else float("nan")
        results.append(dict(condition=name if stream is None else f"{name} -> {stream}", acc=(logits.argmax(-1) == y).float().mean().item(),
                            gate_cnn=gates[:, 0].mean().item(), gate_vit=gates[:, 1].mean().item(),
                            gate_sd=(gates[:, 0] - gates[:, 1]).std().item(), fell=fell))
    return results


def gate_report(args, ckpts: dict[str, list[tuple[int, str]]]) -> None:
    from hylab.checkpoints import load_net_and_config

    per = {}
    for row, runs in ckpts.items():
        for seed, path in runs:
            net, config = load_net_and_config(path, "--ckpt")
            dm = datamodule(config)
            x, y = batches(dm, "test", args.limit)
            background = float(-dm.mean[0] / dm.std[0])
            per.setdefault(row, []).append(gate_statistics(net, x, y, background))
    print("| net | condition | test acc (mean ± sd over seeds) | gate CNN | gate ViT | sd over images of (gate CNN - gate ViT) | images whose corrupted stream's gate fell |")
    print("|---|---|---|---|---|---|---|")
    for row, seeds in per.items():
        for index, (condition, _, _) in enumerate(CONDITIONS):
            rows = [seed_rows[index] for seed_rows in seeds]

            def ms(key, rows=rows):
                values = [r[key] for r in rows]
                return f"{statistics.mean(values):.3f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.3f}"
            fell = "-" if rows[0]["fell"] != rows[0]["fell"] else ms("fell")
            gates = (ms("gate_cnn"), ms("gate_vit"), ms("gate_sd")) if row != "concat" else ("1", "1", "0")
            print(f"| {row} ({len(rows)} seeds) | {rows[0]['condition']} | {ms('acc')} | {gates[0]} | {gates[1]} | {gates[2]} | "
                  f"{fell if row != 'concat' else '-'} |")
