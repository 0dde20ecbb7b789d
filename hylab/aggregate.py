"""Collect the metrics.json of a sweep's jobs into one table: mean ± std per group.

    python -m hylab.aggregate logs/<task>/multiruns/<sweep> --by model.optimizer.lr

Groups are the values the jobs give the `--by` keys (from their overrides, else from their
.hydra/config.yaml); std is the sample standard deviation (n - 1). The table is printed and
written as aggregate.csv and aggregate.md into the sweep folder (or --out). Jobs without a
completed metrics.json (a killed job) are counted and left out. Reads files only: no torch.
"""

import argparse
import csv
import io
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from hylab.records import METRICS_FILE, atomic_write_text, read_record_or_skip

@dataclass
class Job:
    folder: Path
    record: dict
    settings: dict[str, str] = field(default_factory=dict)


def parse_overrides(overrides: list[str]) -> dict[str, str]:
    settings = {}
    for item in overrides:
        key, sep, value = str(item).partition("=")
        if sep:
            settings[key.lstrip("+~")] = value
    return settings


def setting(job: Job, key: str) -> str:
    """The job's value of `key`: its override, else its saved config (unresolved), else '-'."""
    if key in job.settings:
        return job.settings[key]
    config_file = job.folder / ".hydra" / "config.yaml"
    node = yaml.safe_load(config_file.read_text()) if config_file.is_file() else {}
    for part in key.replace("/", ".").split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return "-" if node is None else str(node)


def read_jobs(sweep_dir: Path) -> tuple[list[Job], list[Path]]:
    """(completed jobs, folders of jobs that did not complete) under a sweep folder."""
    done, unfinished = [], []
    for folder in sorted({p.parent for p in sweep_dir.rglob(".hydra")}):
        path = folder / METRICS_FILE
        record = (read_record_or_skip(path) or {}) if path.is_file() else {}
        if record.get("status") == "completed":
            done.append(Job(folder, record, parse_overrides(record.get("overrides") or [])))
        else:
            unfinished.append(folder)
    return done, unfinished


def default_metrics(jobs: list[Job]) -> list[str]:
    """test/<name> metrics every job logged (per-class ones, test/<a>/<b>, left out)."""
    common = set.intersection(*(set(job.record.get("metrics") or {}) for job in jobs)) if jobs else set()
    return sorted(name for name in common if name.startswith("test/") and name.count("/") == 1)


def summarize(jobs: list[Job], by: list[str], metrics: list[str]) -> list[dict]:
    """One row per group; a `stopped` column when any job stopped early (pruned, time budget)."""
    groups: dict[tuple, list[Job]] = {}
    for job in jobs:
        groups.setdefault(tuple(setting(job, key) for key in by), []).append(job)
    any_stopped = any(job.record.get("stopped") for job in jobs)
    rows = []
    for values, members in sorted(groups.items()):
        row = dict(zip(by, values)) | {"n": len(members)}
        if any_stopped:
            row["stopped"] = ", ".join(sorted({str(job.record["stopped"]) for job in members if job.record.get("stopped")})) or "-"
        for name in metrics:
            numbers = [float(job.record["metrics"][name]) for job in members if name in (job.record.get("metrics") or {})]
            row[f"{name} mean"] = statistics.fmean(numbers) if numbers else float("nan")
            row[f"{name} std"] = statistics.stdev(numbers) if len(numbers) > 1 else 0.0
        rows.append(row)
    return rows


def markdown(rows: list[dict], by: list[str], metrics: list[str]) -> str:
    stopped = ["stopped"] if rows and "stopped" in rows[0] else []
    header = [*by, "n", *stopped, *metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [str(row[key]) for key in by] + [str(row["n"])] + [row[key] for key in stopped]
        cells += [f"{row[f'{name} mean']:.4f} ± {row[f'{name} std']:.4f}" for name in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None, prog: str = "python -m hylab.aggregate", notes=None) -> int:
    """The CLI. `notes(jobs) -> str` adds a family's own words to the summary line."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--by", nargs="*", default=[], help="config keys to group by, e.g. model.optimizer.lr model/net")
    parser.add_argument("--metrics", nargs="*", default=None, help="metric names (default: every test/<name> all jobs logged)")
    parser.add_argument("--out", type=Path, default=None, help="folder for aggregate.csv / aggregate.md (default: the sweep folder)")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"error: {args.sweep_dir} is not a folder", file=sys.stderr)
        return 2
    jobs, unfinished = read_jobs(args.sweep_dir)
    if not jobs:
        print(f"error: no completed job (a folder with .hydra/ and a completed {METRICS_FILE}) under {args.sweep_dir}", file=sys.stderr)
        return 2
    print(write_summary(args.sweep_dir, jobs, unfinished, args.by, args.metrics, args.out, notes))
    return 0


def write_summary(sweep_dir: Path, jobs: list[Job], unfinished: list[Path], by: list[str], metrics: list[str] | None = None,
                  out: Path | None = None, notes=None) -> str:
    """Write aggregate.md / aggregate.csv for completed `jobs` and return the printed summary."""
    metrics = metrics or default_metrics(jobs)
    rows = summarize(jobs, by, metrics)
    reused = sum(1 for job in jobs if job.record.get("reused_from"))
    pruned = sum(1 for job in jobs if str(job.record.get("stopped", "")).startswith("pruned"))
    summary = f"{len(jobs)} completed jobs ({reused} reused from the run store{f', {pruned} pruned' if pruned else ''}), {len(unfinished)} unfinished"
    summary += (f"; {notes(jobs)}" if notes else "") + "\n"
    table = markdown(rows, by, metrics)
    out = out or sweep_dir
    atomic_write_text(out / "aggregate.md", f"{table}\n{summary}")
    table_csv = io.StringIO(newline="")
    writer = csv.DictWriter(table_csv, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "aggregate.csv", table_csv.getvalue())
    return table + "\n" + summary + f"written: {out / 'aggregate.csv'}, {out / 'aggregate.md'}"


def varied_keys(jobs: list[Job], ignore: tuple[str, ...] = ("seed",)) -> list[str]:
    """Override keys whose value differs between jobs (what a sweep varied), minus `ignore`."""
    keys = sorted({key for job in jobs for key in job.settings} - set(ignore))
    return [key for key in keys if len({job.settings.get(key) for job in jobs}) > 1]


if __name__ == "__main__":
    sys.exit(main())
