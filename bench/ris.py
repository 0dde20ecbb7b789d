"""Angle and range RMSE versus SNR on held-out simulated RIS scenes: the trained hybrid model,
the learned covariance alone (beta = 0), classical MUSIC on the sample covariance of the same
snapshots, and the Cramer-Rao bound of the coded-snapshot model.

    uv run python -m bench.ris --hybrid <run>/checkpoints/last.ckpt --learned <run>/checkpoints/last.ckpt

Every method sees the same scenes (split "bench", never used in training) and is given the true
K, as the CRB assumes; source-count accuracy is reported separately (count head vs MDL/AIC).
Writes a markdown table to stdout, docs/ris_bench.json and docs/ris_rmse_vs_snr.png.
"""

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

from datamodules.ris.datamodule import SimulatedScenes
from datamodules.ris.physics import as_complex, steering
from datamodules.ris.scenes import SceneConfig
from lightning_modules.ris.module import RISLocalizer
from lightning_modules.ris.crb import fisher_information, position_crb
from lightning_modules.ris.metrics import match_sources, truth_of

DOCS = Path(__file__).resolve().parent.parent / "docs"


def load_model(path: str, **overrides) -> RISLocalizer:
    """A trained RISLocalizer from a checkpoint, MUSIC given the true K (k_acc still comes from
    the count head); its net is rebuilt from the config embedded in the checkpoint."""
    from hylab.checkpoints import load_checkpoint, net_config
    from hylab.instantiate import build

    checkpoint = load_checkpoint(path, "--hybrid/--learned")
    module = RISLocalizer(net=build(net_config(checkpoint)), **{**checkpoint["hyper_parameters"], "k_from": "truth", **overrides})
    module.load_state_dict(checkpoint["state_dict"])
    return module.eval()


def scene_config_of(module: RISLocalizer) -> SceneConfig:
    return SceneConfig(module.geometry, module.settings.snapshots, module.settings.k_max)


def crb_of_batch(batch: dict, config: SceneConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-source CRB variances of (azimuth, elevation) summed [rad^2] and of range [m^2]."""
    geometry = config.geometry
    positions = geometry.element_positions()
    angles, ranges = [], []
    for b in range(len(batch["k"])):
        count = int(batch["k"][b])
        channel, codes = (as_complex(batch[key][b]).to(torch.complex128) for key in ("H", "C"))
        sensing = channel[None] * codes[:, None, :]
        params = truth_of(batch)[b, :count].double()

        def steer(p):
            return steering(positions, geometry.wavenumber, p[:, 0], p[:, 1], p[:, 2]).mT

        noise = 10 ** (-float(batch["snr_db"][b]) / 10)
        bound = position_crb(fisher_information(steer, params, sensing, torch.ones(count), noise), count, 3)
        angles.append(bound[:, 0] + bound[:, 1])
        ranges.append(bound[:, 2])
    return torch.cat(angles), torch.cat(ranges)


def evaluate(module: RISLocalizer, batch: dict) -> dict:
    with torch.no_grad():
        result = module.localize(batch)
    errors = match_sources(result["estimates"], batch["k"], truth_of(batch), batch["k"]).summary()
    errors["k_acc"] = float((result["k_counted"] == batch["k"]).float().mean())
    return errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hybrid", required=True, help="checkpoint of the hybrid model")
    parser.add_argument("--learned", help="checkpoint of a model trained with beta=0 (default: the hybrid net at beta=0)")
    parser.add_argument("--snrs", type=float, nargs="+", default=[-5.0, 0.0, 5.0, 10.0, 20.0])
    parser.add_argument("--scenes", type=int, default=256, help="scenes per SNR")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(DOCS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    hybrid = load_model(args.hybrid)
    learned = load_model(args.learned) if args.learned else load_model(args.hybrid, beta=0.0)
    learned_label = "learned only (beta=0, own training)" if args.learned else "hybrid net at beta=0"
    classical = RISLocalizer(net=None, **hybrid.hparams).eval()  # the same geometry, ridge, loading and MUSIC
    methods = {f"hybrid (beta={hybrid.settings.beta:g})": hybrid, learned_label: learned, "classical MUSIC": classical}
    config = scene_config_of(hybrid)

    rows, started = [], time.perf_counter()
    for snr in args.snrs:
        batch = SimulatedScenes(config, args.seed, "bench", args.scenes, snr_db=snr).__getitems__(range(args.scenes))
        row = {"snr_db": snr}
        for name, module in methods.items():
            tic = time.perf_counter()
            row[name] = evaluate(module, batch) | {"seconds": round(time.perf_counter() - tic, 2)}
        angle_var, range_var = crb_of_batch(batch, config)
        row["CRB"] = {"rmse_deg": math.degrees(math.sqrt(float(angle_var.mean()))), "rmse_m": math.sqrt(float(range_var.mean())),
                      "median_deg": math.degrees(float(angle_var.median().sqrt())), "median_m": float(range_var.median().sqrt())}
        rows.append(row)
        print(f"SNR {snr:+.0f} dB done ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)

    print_table(rows, list(methods) + ["CRB"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ris_bench.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    plot(rows, list(methods) + ["CRB"], out / "ris_rmse_vs_snr.png")
    print(f"\nwall time {time.perf_counter() - started:.0f} s; wrote {out / 'ris_bench.json'} and {out / 'ris_rmse_vs_snr.png'}")


def print_table(rows: list[dict], names: list[str]) -> None:
    hybrid, classical = names[0], "classical MUSIC"
    for metric, unit in (("rmse_deg", "deg"), ("rmse_m", "m")):
        print(f"\n{metric} ({unit})\n")
        print("| SNR (dB) | " + " | ".join(names) + f" | {hybrid.split(' ')[0]} / MUSIC | {hybrid.split(' ')[0]} / CRB |")
        print("|---" * (len(names) + 3) + "|")
        for row in rows:
            values = [row[name][metric] for name in names]
            ratios = [row[hybrid][metric] / row[classical][metric], row[hybrid][metric] / row["CRB"][metric]]
            print(f"| {row['snr_db']:+.0f} | " + " | ".join(f"{v:.3g}" for v in values) + " | " + " | ".join(f"{r:.2f}" for r in ratios) + " |")
    print("\nmedian angle error (deg) / median range error (m) / share of sources off by more than 5 deg\n")
    print("| SNR (dB) | " + " | ".join(names[:-1]) + " | CRB (median of per-source bounds) |")
    print("|---" * (len(names) + 1) + "|")
    for row in rows:
        cells = [f"{row[n]['median_deg']:.2f} / {row[n]['median_m']:.2f} / {row[n]['outliers']:.2f}" for n in names[:-1]]
        crb = f"{row['CRB']['median_deg']:.3f} / {row['CRB']['median_m']:.3f}"
        print(f"| {row['snr_db']:+.0f} | " + " | ".join(cells) + f" | {crb} |")
    print("\nsource-count accuracy (count head for the learned models, MDL for MUSIC)\n")
    print("| SNR (dB) | " + " | ".join(names[:-1]) + " |")
    print("|---" * len(names) + "|")
    for row in rows:
        print(f"| {row['snr_db']:+.0f} | " + " | ".join(f"{row[name]['k_acc']:.2f}" for name in names[:-1]) + " |")


def plot(rows: list[dict], names: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    snrs = [row["snr_db"] for row in rows]
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, style in zip(names, ("o-", "s-", "^-", "k--")):
        for ax, metric in zip(axes, ("rmse_deg", "rmse_m")):
            ax.semilogy(snrs, [row[name][metric] for row in rows], style, label=name)
    axes[0].set(xlabel="SNR (dB)", ylabel="angle RMSE (deg)", title="angle (azimuth and elevation)")
    axes[1].set(xlabel="SNR (dB)", ylabel="range RMSE (m)", title="range")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
