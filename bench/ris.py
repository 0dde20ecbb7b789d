"""Angle and range RMSE versus SNR on held-out simulated RIS scenes: classical MUSIC, the trained
hybrid model, the learned covariance alone (beta = 0), each also followed by maximum-likelihood
refinement on the coded snapshots (model.refine=ml), and the Cramer-Rao bound of the model.

    uv run python -m bench.ris --hybrid <run>/checkpoints/last.ckpt [--learned <beta0.ckpt>] --scenes 48
    uv run python -m bench.ris --hybrid <ckpt> --snapshot-check 16 64 256 --scenes 32 --snrs 10

Every method sees the same scenes (split "bench", never used in training). Each is scored with
the true K (as the CRB assumes) and with its own estimated K: MDL for MUSIC, the count head for
the learned models, the information criterion on the ML fits for "+ ML". "+ ML" starts from a
pool of the method's own starts (the net's proposals and the MUSIC peaks of its covariance;
MUSIC's peaks for the classical model) plus a coarse grid; "+ ML (no grid)" from its own starts
only, which shows what the initialization is worth. One greedy pass serves both counts.
Writes a markdown table to stdout, docs/ris_bench.json and docs/ris_rmse_vs_snr.png
(--snapshot-check: docs/ris_snapshots.json instead).
"""

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

from datamodules.ris.datamodule import SimulatedScenes
from datamodules.ris.physics import as_complex, steering
from datamodules.ris.scenes import SceneConfig
from lightning_modules.ris.crb import fisher_information, position_crb
from lightning_modules.ris.metrics import match_sources, truth_of
from lightning_modules.ris.module import RISLocalizer

DOCS = Path(__file__).resolve().parent.parent / "docs"


def load_model(path: str, **overrides) -> RISLocalizer:
    """A trained RISLocalizer from a checkpoint; its net is rebuilt from the config embedded in it."""
    from hylab.checkpoints import build_checked_net, load_checkpoint, net_config

    checkpoint = load_checkpoint(path, "--hybrid/--learned")
    module = RISLocalizer(net=build_checked_net(net_config(checkpoint), path, "--hybrid/--learned"), **{**checkpoint["hyper_parameters"], "k_from": "truth", **overrides})
    module.load_state_dict(checkpoint["state_dict"])
    return module.eval()


def scene_config_of(module: RISLocalizer, snapshots: int | None = None) -> SceneConfig:
    return SceneConfig(module.geometry, snapshots or module.settings.snapshots, module.settings.k_max)


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


def score(estimates, k_est, batch) -> dict:
    return match_sources(estimates.cpu(), k_est.cpu(), truth_of(batch).cpu(), batch["k"].cpu()).summary()


def evaluate(module: RISLocalizer, batch: dict, ml: bool) -> dict[str, dict]:
    """{"true K": scores, "estimated K": scores} of one method on one batch (k_acc: its count)."""
    batch = {key: value.to(module.device) for key, value in batch.items()}
    tic = time.perf_counter()
    with torch.no_grad():
        cov, out = module.covariances(batch)
        if not ml:
            counted = module.source_count(cov, out, batch, "head" if module.net is not None else "mdl")
            truth = module.music.estimate(cov.blend, batch["k"], module.settings.k_max)
            own = module.music.estimate(cov.blend, counted, module.settings.k_max)
            results = {"true K": (truth, batch["k"]), "estimated K": (own, counted)}
        else:
            subspace = module.source_count(cov, out, batch, "ml")
            results = module.refine(batch, cov, out, subspace, {"true K": batch["k"], "estimated K": module.order_penalty(batch)})
    if module.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - tic
    counted = results["estimated K"][1]
    k_acc = float((counted == batch["k"]).float().mean())
    return {name: score(est, k, batch) | {"k_acc": k_acc, "seconds_per_scene": round(seconds / len(batch["k"]), 4)}
            for name, (est, k) in results.items()}


def with_ml(module: RISLocalizer, grid: bool) -> RISLocalizer:
    """The same model with ML refinement (grid=False: the pool is its own starts only)."""
    ml = dataclasses.asdict(module.settings.ml) | ({} if grid else {"grid_step_deg": None})
    twin = RISLocalizer(net=module.net, **(module.hparams | {"refine": "ml", "ml": ml})).eval()
    return twin


def methods_of(args) -> dict[str, tuple[RISLocalizer, bool]]:
    hybrid = load_model(args.hybrid)
    learned = load_model(args.learned) if args.learned else load_model(args.hybrid, beta=0.0)
    classical = RISLocalizer(net=None, **(hybrid.hparams | {"k_from": "truth"})).eval()  # same geometry, ridge, MUSIC
    hybrid_name = f"hybrid (beta={hybrid.settings.beta:.2f})"
    learned_name = "learned only (beta=0" + (", own training)" if args.learned else ", hybrid net)")
    methods = {"classical MUSIC": (classical, False), "MUSIC + ML": (with_ml(classical, True), True),
               "MUSIC + ML (no grid)": (with_ml(classical, False), True), hybrid_name: (hybrid, False),
               f"{hybrid_name} + ML": (with_ml(hybrid, True), True), f"{hybrid_name} + ML (no grid)": (with_ml(hybrid, False), True),
               learned_name: (learned, False), f"{learned_name} + ML (no grid)": (with_ml(learned, False), True)}
    return {name: methods[name] for name in methods if not args.only or any(part in name for part in args.only)}


def crb_entry(batch, config) -> dict:
    angle_var, range_var = crb_of_batch(batch, config)
    return {"rmse_deg": math.degrees(math.sqrt(float(angle_var.mean()))), "rmse_m": math.sqrt(float(range_var.mean())),
            "median_deg": math.degrees(float(angle_var.median().sqrt())), "median_m": float(range_var.median().sqrt())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hybrid", required=True, help="checkpoint of the hybrid model")
    parser.add_argument("--learned", help="checkpoint of a model trained with beta=0 (default: the hybrid net at beta=0)")
    parser.add_argument("--snrs", type=float, nargs="+", default=[-5.0, 0.0, 5.0, 10.0, 15.0, 20.0])
    parser.add_argument("--scenes", type=int, default=48, help="scenes per SNR")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="where the models, MUSIC and the ML fits run (cuda on a GPU)")
    parser.add_argument("--only", nargs="*", help="run only the methods whose name contains one of these")
    parser.add_argument("--merge", action="store_true",
                        help="add to the methods of an existing ris_bench.json of the same scenes (a bench run in parts)")
    parser.add_argument("--snapshot-check", type=int, nargs="*",
                        help="instead: classical MUSIC and MUSIC + ML (no grid) with these snapshot counts L on the same sources")
    parser.add_argument("--out", default=str(DOCS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if args.snapshot_check:
        return snapshot_check(args, out, started)

    methods = {name: (module.to(args.device), ml) for name, (module, ml) in methods_of(args).items()}
    config = scene_config_of(next(iter(methods.values()))[0])
    rows = []
    for snr in args.snrs:
        batch = SimulatedScenes(config, args.seed, "bench", args.scenes, snr_db=snr).__getitems__(range(args.scenes))
        row = {"snr_db": snr}
        for name, (module, ml) in methods.items():
            results = evaluate(module, batch, ml)
            row[name] = results["true K"]
            row[f"{name}, estimated K"] = results["estimated K"]
        row["CRB"] = crb_entry(batch, config)
        rows.append(row)
        print(f"SNR {snr:+.0f} dB done ({time.perf_counter() - started:.0f} s, load {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)

    names = list(methods) + ["CRB"]
    previous, parts = out / "ris_bench.json", []
    if args.merge and previous.is_file():
        old = json.loads(previous.read_text())
        same = all(old["args"][key] == getattr(args, key) for key in ("snrs", "scenes", "seed"))
        if not same:
            raise SystemExit(f"--merge: {previous} holds other scenes (snrs, scenes or seed differ)")
        earlier = [name for name in old["args"]["methods"] if name not in methods]
        rows = [old_row | row for old_row, row in zip(old["rows"], rows)]
        names = earlier + names
        parts = old.get("parts", [{"methods": earlier, "args": old["args"], "run": old.get("run")}])
    args.methods = names[:-1]
    print_table(rows, names)
    meta = {"load_average_at_end": os.getloadavg(), "wall_s": round(time.perf_counter() - started)}
    parts = (parts if args.merge and previous.is_file() else []) + [{"methods": list(methods), "args": dict(vars(args)), "run": meta}]
    (out / "ris_bench.json").write_text(json.dumps({"args": vars(args), "run": meta, "parts": parts, "rows": rows}, indent=1))
    plot(rows, names, out / "ris_rmse_vs_snr.png")
    print(f"\nwall time {meta['wall_s']} s; wrote {out / 'ris_bench.json'} and {out / 'ris_rmse_vs_snr.png'}")


def snapshot_check(args, out: Path, started: float) -> None:
    """The classical floor versus the snapshot count: the same sources and channel (drawn before
    the codes), L codes and snapshots each."""
    hybrid = load_model(args.hybrid)
    classical = RISLocalizer(net=None, **(hybrid.hparams | {"k_from": "truth"})).eval()
    rows = []
    for snr in args.snrs:
        for snapshots in args.snapshot_check:
            config = scene_config_of(hybrid, snapshots)
            batch = SimulatedScenes(config, args.seed, "bench", args.scenes, snr_db=snr).__getitems__(range(args.scenes))
            module = RISLocalizer(net=None, **(classical.hparams | {"snapshots": snapshots})).eval().to(args.device)
            row = {"snr_db": snr, "snapshots": snapshots, "classical MUSIC": evaluate(module, batch, False)["true K"],
                   "MUSIC + ML (no grid)": evaluate(with_ml(module, False).to(args.device), batch, True)["true K"], "CRB": crb_entry(batch, config)}
            rows.append(row)
            print(f"SNR {snr:+.0f} dB, L = {snapshots} done ({time.perf_counter() - started:.0f} s, load {os.getloadavg()[0]:.1f})",
                  file=sys.stderr, flush=True)
    print("\n| SNR (dB) | L | MUSIC rmse / median (deg) | MUSIC outliers | MUSIC + ML (no grid) rmse / median (deg) | ML outliers | "
          "ML rmse / median (m) | CRB rmse (deg) / (m) |")
    print("|---" * 8 + "|")
    for row in rows:
        music, ml, crb = row["classical MUSIC"], row["MUSIC + ML (no grid)"], row["CRB"]
        print(f"| {row['snr_db']:+.0f} | {row['snapshots']} | {music['rmse_deg']:.3g} / {music['median_deg']:.3g} | {music['outliers']:.2f} | "
              f"{ml['rmse_deg']:.3g} / {ml['median_deg']:.3g} | {ml['outliers']:.2f} | {ml['rmse_m']:.3g} / {ml['median_m']:.3g} | "
              f"{crb['rmse_deg']:.3g} / {crb['rmse_m']:.3g} |")
    meta = {"load_average_at_end": os.getloadavg(), "wall_s": round(time.perf_counter() - started)}
    (out / "ris_snapshots.json").write_text(json.dumps({"args": vars(args), "run": meta, "rows": rows}, indent=1))
    print(f"\nwall time {meta['wall_s']} s; wrote {out / 'ris_snapshots.json'}")


def print_table(rows: list[dict], names: list[str]) -> None:
    methods = names[:-1]
    for metric, unit in (("rmse_deg", "deg"), ("rmse_m", "m")):
        for suffix, label in (("", "true K"), (", estimated K", "estimated K")):
            print(f"\n{metric} ({unit}), {label}; last column: best method / CRB\n")
            print("| SNR (dB) | " + " | ".join(methods) + " | CRB | best / CRB |")
            print("|---" * (len(methods) + 3) + "|")
            for row in rows:
                values = [row[name + suffix][metric] for name in methods]
                best = min(v for v in values if v == v)
                print(f"| {row['snr_db']:+.0f} | " + " | ".join(f"{v:.3g}" for v in values)
                      + f" | {row['CRB'][metric]:.3g} | {best / row['CRB'][metric]:.2f} |")
    print("\nmedian angle error (deg) / median range error (m) / share of sources off by more than 5 deg, true K\n")
    print("| SNR (dB) | " + " | ".join(methods) + " | CRB (median of per-source bounds) |")
    print("|---" * (len(methods) + 2) + "|")
    for row in rows:
        cells = [f"{row[n]['median_deg']:.2f} / {row[n]['median_m']:.2f} / {row[n]['outliers']:.2f}" for n in methods]
        print(f"| {row['snr_db']:+.0f} | " + " | ".join(cells) + f" | {row['CRB']['median_deg']:.3f} / {row['CRB']['median_m']:.3f} |")
    print("\nsource-count accuracy (MDL for MUSIC, count head for the learned models, the information criterion for + ML)"
          " / seconds per scene\n")
    print("| SNR (dB) | " + " | ".join(methods) + " |")
    print("|---" * (len(methods) + 1) + "|")
    for row in rows:
        print(f"| {row['snr_db']:+.0f} | " + " | ".join(f"{row[n]['k_acc']:.2f} / {row[n]['seconds_per_scene']:.2f}" for n in methods) + " |")


def plot(rows: list[dict], names: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    snrs = [row["snr_db"] for row in rows]
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    styles = ("o-", "o--", "s-", "s--", "^-", "^--", "v-", "v--")
    for name, style in zip(names, [*styles[: len(names) - 1], "k:"]):
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
