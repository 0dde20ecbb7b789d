"""Submit and leave: `run.py -m hydra/launcher=slurm hydra.launcher.wait=false ...`.

The first command submits the sweep's jobs as one SLURM job array through submitit (the same
pickled Hydra job the waiting launcher runs), writes `<sweep dir>/slurm_jobs.json` and returns.
The same command again finds that sweep by the hash of its job overrides (under the same
`multiruns/` folder), prints each job's state, submits again only the jobs that failed, and once
every job is done prints the sweep's end table. Nothing queued, running or done is submitted
twice (a file lock keeps two such commands from racing). A preempted job still requeues itself
(SIGUSR1 -> Lightning's checkpoint and `scontrol requeue`): SLURM shows it pending again.

States: `done` / `failed` from the job's result file (submitit's, holding Hydra's JobReturn);
otherwise SLURM's state from `squeue` (pending, running); a job SLURM no longer lists, without a
result, failed (cancelled, lost node, killed before it could write one).
"""

import copy
import hashlib
import json
import logging
import shlex
import subprocess
import sys
from pathlib import Path

from omegaconf import OmegaConf, open_dict, read_write

RECORD = "slurm_jobs.json"
PENDING = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING", "SUSPENDED", "RESV_DEL_HOLD"}
RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING", "COMPLETED"}  # COMPLETED: result file on its way


def sweep_key(job_overrides) -> str:
    """The identity of a sweep: its jobs' overrides, in order."""
    return hashlib.sha256(json.dumps([list(o) for o in job_overrides]).encode()).hexdigest()[:16]


def find_submission(multiruns: Path, key: str) -> Path | None:
    """The newest record of the same sweep under `multiruns` (one folder per earlier command)."""
    found = []
    for path in multiruns.glob(f"*/{RECORD}"):
        try:
            if json.loads(path.read_text())["key"] == key:
                found.append(path)
        except (OSError, ValueError, KeyError):
            continue
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def this_command() -> str:
    return shlex.join(["python", *sys.argv])


def executor(params: dict, sweep_dir: Path):
    """submitit's SLURM executor for `hydra.launcher.*`, mapped as hydra-submitit-launcher maps them."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    init = {"folder": str(sweep_dir / ".submitit" / "%j")}
    if params.get("max_num_timeout") is not None:
        init["slurm_max_num_timeout"] = params["max_num_timeout"]
    ex = submitit.AutoExecutor(cluster="slurm", **init)
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    skip = {"submitit_folder", "max_num_timeout"}
    ex.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items() if k not in skip})
    return ex


def submit(job, params: dict, context: dict, sweep_dir: Path, jobs: list[tuple[int, list[str]]]) -> list[str]:
    """Submit `(job number, overrides)` as one array of Hydra jobs writing into `sweep_dir`; their ids."""
    from hydra.core.singleton import Singleton

    config = copy.deepcopy(context["config"])
    # each job recomposes its config from the hydra overrides: pin the sweep folder there
    with read_write(config), open_dict(config):
        pinned = [o for o in config.hydra.overrides.hydra if not str(o).startswith("hydra.sweep.dir=")]
        config.hydra.overrides.hydra = [*pinned, f"hydra.sweep.dir='{sweep_dir}'"]
        config.hydra.sweep.dir = str(sweep_dir)
    job.setup(hydra_context=context["hydra_context"], task_function=context["task_function"], config=config)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    args = [(list(o), "hydra.sweep.dir", num, f"job_id_for_{num}", Singleton.get_state()) for num, o in jobs]
    return [j.job_id for j in executor(params, sweep_dir).map_array(job, *zip(*args))]


def queue_states(job_ids: list[str]) -> dict[str, str]:
    """SLURM's state of each listed array task (`squeue -t all`: finished ones too, for MinJobAge)."""
    arrays = sorted({j.split("_")[0] for j in job_ids})
    done = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-o", "%i %T", "-j", ",".join(arrays)], capture_output=True, text=True, timeout=60)
    # squeue fails when it knows none of the ids any more: then none is listed
    rows = (line.split() for line in done.stdout.splitlines() if done.returncode == 0)
    return {row[0]: row[1] for row in rows if len(row) == 2}


def job_state(sweep_dir: Path, job_id: str, queue: dict[str, str]) -> str:
    import submitit
    from hydra.core.utils import JobStatus

    job = submitit.SlurmJob(folder=sweep_dir / ".submitit" / "%j", job_id=job_id)
    if job.paths.result_pickle.exists():
        try:
            return "done" if job.result().status == JobStatus.COMPLETED else "failed"
        except Exception:  # submitit's own failure record
            return "failed"
    slurm = queue.get(job_id)
    if slurm in PENDING:
        return "pending"
    if slurm in RUNNING:
        return "running"
    return "failed"


def first_submission(job, params, context, sweep_dir: Path, key: str, job_overrides, initial_job_idx: int) -> None:
    jobs = [(initial_job_idx + i, list(o)) for i, o in enumerate(job_overrides)]
    ids = submit(job, params, context, sweep_dir, jobs)
    record = {"key": key, "command": this_command(), "jobs": [{"num": n, "overrides": o, "job_ids": [i]} for (n, o), i in zip(jobs, ids)]}
    (sweep_dir / RECORD).write_text(json.dumps(record, indent=1))
    print(f"submitted {len(ids)} jobs to SLURM: {' '.join(ids)}")
    print(f"sweep folder: {sweep_dir}")
    print(f"progress (the same command; it also submits failed jobs again):\n  {this_command()}")


def swept(rows: list[dict]) -> dict[int, str]:
    """Each job's overrides that differ between the jobs (all of them for a single job)."""
    values = {r["num"]: dict(o.split("=", 1) if "=" in o else (o, "") for o in r["overrides"]) for r in rows}
    keys = {k for v in values.values() for k in v}
    varied = [k for k in sorted(keys) if len({v.get(k) for v in values.values()}) > 1] if len(rows) > 1 else sorted(keys)
    return {num: " ".join(f"{k}={v[k]}" for k in varied if k in v) for num, v in values.items()}


def report(job, params, context, record_path: Path) -> None:
    sweep_dir = record_path.parent
    record = json.loads(record_path.read_text())
    rows = record["jobs"]
    queue = queue_states([r["job_ids"][-1] for r in rows])
    states = {r["num"]: job_state(sweep_dir, r["job_ids"][-1], queue) for r in rows}
    failed = [r for r in rows if states[r["num"]] == "failed"]
    print(f"sweep folder: {sweep_dir}")
    shown = swept(rows)
    print(f"{'job':>4}  {'slurm id':<12} {'state':<8} overrides")
    for r in rows:
        tries = f" (try {len(r['job_ids'])})" if len(r["job_ids"]) > 1 else ""
        print(f"{r['num']:>4}  {r['job_ids'][-1]:<12} {states[r['num']]:<8} {shown[r['num']]}{tries}")
    if failed:
        ids = submit(job, params, context, sweep_dir, [(r["num"], r["overrides"]) for r in failed])
        for r, new in zip(failed, ids):
            r["job_ids"].append(new)
            print(f"job {r['num']} failed (log: {sweep_dir / '.submitit' / r['job_ids'][-2]}); submitted again as {new}")
        record_path.write_text(json.dumps(record, indent=1))
    counts = {s: list(states.values()).count(s) for s in ("pending", "running", "done", "failed")}
    print(", ".join(f"{n} {s}" for s, n in counts.items() if n))
    if counts["done"] == len(rows):
        from hylab.sweep_summary import SweepSummary

        SweepSummary().on_multirun_end(config=OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep_dir)}}}))
    else:
        print(f"progress: {this_command()}")


def submit_and_leave(job, params: dict, context: dict, job_overrides, initial_job_idx: int) -> None:
    """Submit the sweep, or report on (and resubmit the failed jobs of) the same sweep submitted before."""
    from filelock import FileLock

    logging.getLogger("submitit").setLevel(logging.ERROR)  # "Bypassing sacct error" where SLURM keeps no accounting
    sweep_dir = Path(str(context["config"].hydra.sweep.dir))
    key = sweep_key(job_overrides)
    with FileLock(str(sweep_dir.parent / f".slurm-{key}.lock")):
        found = find_submission(sweep_dir.parent, key)
        if found is None:
            first_submission(job, params, context, sweep_dir, key, job_overrides, initial_job_idx)
            return
        if found.parent != sweep_dir and sweep_dir.is_dir() and {p.name for p in sweep_dir.iterdir()} <= {"multirun.yaml"}:
            # the folder Hydra just made for this command: the sweep lives in the earlier one
            (sweep_dir / "multirun.yaml").unlink(missing_ok=True)
            sweep_dir.rmdir()
        report(job, params, context, found)
