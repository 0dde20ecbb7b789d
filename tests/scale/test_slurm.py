"""A fine-tuning sweep through the local SLURM cluster (scripts/local_slurm.sh): `run.py -m
hydra/launcher=slurm` submits a job array through sbatch, the jobs share one base model through the
run store's file lock, the results and the aggregate table come back; one job is preempted
(SIGUSR1, as SLURM sends it before a time limit), checkpoints, is requeued and resumes."""

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from tests.helpers import ROOT, timeout_for

pytestmark = pytest.mark.slow

# Two jobs that start from the same base model (participant 0), both running at once on the
# node's two CPUs. Fine-tuning runs 6 short epochs, so a signal lands while job 0 trains.
SWEEP = [
    "-m", "hydra/launcher=slurm", "experiment=har_finetune", "finetune.mode=full_fine_tuning,target_only_fine_tuning",
    "data.target_subject=0", "debug=limit", "trainer.max_epochs=6", "callbacks.progress_bar=null",
    'finetune.base.extra_overrides=["debug=limit"]',
    "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=10",
]
PREEMPTED = "0"


def completed(path: Path) -> bool:
    try:
        return json.loads(path.read_text()).get("status") == "completed"
    except (OSError, ValueError):
        return False


def record(job_dir: Path) -> dict:
    return json.loads((job_dir / "metrics.json").read_text())


def aggregate_module() -> str:
    """The aggregation CLI wherever the HAR package keeps it."""
    for name in ("hylab.aggregate", "lightning_modules.har.aggregate"):
        try:
            if importlib.util.find_spec(name):
                return name
        except ModuleNotFoundError:
            continue
    raise AssertionError("no aggregation module found")


def wait_for(condition, timeout: float, proc: subprocess.Popen, what: str) -> None:
    deadline = time.time() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the sweep ended (rc {proc.returncode}) before {what}:\n{proc.stdout.read()[-4000:]}")
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def sweep(slurm_env, tmp_path_factory) -> SimpleNamespace:
    """The sweep, with job 0 sent SIGUSR1 once it has checkpointed its first fine-tuning epoch."""
    log_dir = tmp_path_factory.mktemp("slurm_sweep")
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "run.py"), *SWEEP, f"paths.log_dir={log_dir}"],
        cwd=ROOT, env=slurm_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        sweeps = lambda: list(log_dir.glob("debug/multiruns/*/.submitit"))  # noqa: E731
        wait_for(lambda: sweeps(), 120, proc, "the jobs were submitted")
        sweep_dir = sweeps()[0].parent
        job = sweep_dir / PREEMPTED
        wait_for(lambda: list((job / "checkpoints").glob("epoch_*.ckpt")), 300, proc, "job 0 checkpointed an epoch")
        array_id = next(p.name for p in (sweep_dir / ".submitit").iterdir() if p.name.endswith(f"_{PREEMPTED}"))
        subprocess.run(["scancel", "--signal=USR1", array_id], env=slurm_env, check=True, timeout=30)
        out, _ = proc.communicate(timeout=timeout_for(3.5))
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-4000:]
    return SimpleNamespace(log_dir=log_dir, dir=sweep_dir, job_id=array_id, wall_s=time.perf_counter() - started, env=slurm_env)


def test_slurm_sweep_runs_every_job_through_sbatch_and_brings_results_back(sweep):
    jobs = sorted(p for p in sweep.dir.iterdir() if p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1"]
    array = sweep.job_id.split("_")[0]
    for job in jobs:
        assert completed(job / "metrics.json")
        assert "test/f1_macro" in record(job)["metrics"]
        # Hydra's job id is SLURM's: the job ran under sbatch, not in this process
        assert yaml.safe_load((job / ".hydra" / "hydra.yaml").read_text())["hydra"]["job"]["id"] == f"{array}_{job.name}"
        assert (sweep.dir / ".submitit" / f"{array}_{job.name}" / f"{array}_{job.name}_0_result.pkl").is_file()
    print(f"slurm sweep: {len(jobs)} jobs, wall {sweep.wall_s:.0f} s")


def test_jobs_of_one_participant_share_one_base_model_trained_once(sweep):
    keys = {json.loads((sweep.dir / job / "base_model.json").read_text())["key"] for job in ("0", "1")}
    trained = [p for p in sweep.log_dir.rglob("*_store-*") if completed(p / "metrics.json")]
    assert len(keys) == 1 and len(trained) == 1
    logs = [(sweep.dir / job / "run.log").read_text() for job in ("0", "1")]
    assert sum("training har_base" in log for log in logs) == 1


def test_aggregate_table_of_the_slurm_sweep(sweep):
    done = subprocess.run(
        [sys.executable, "-m", aggregate_module(), str(sweep.dir), "--by", "finetune.mode"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "2 completed jobs" in done.stdout
    table = (sweep.dir / "aggregate.csv").read_text().splitlines()
    assert {row.split(",")[0] for row in table[1:]} == {"full_fine_tuning", "target_only_fine_tuning"}


def test_preempted_job_checkpoints_is_requeued_and_resumes(sweep):
    job = sweep.dir / PREEMPTED
    hpc = sorted(job.glob("hpc_ckpt_*.ckpt"))
    assert hpc, "no checkpoint written on SIGUSR1"
    log = (job / "run.log").read_text()
    assert "Handling auto-requeue signal" in log and f"Requeued SLURM job: {sweep.job_id}" in log
    assert f"Restored all states from the checkpoint at {hpc[-1]}" in log
    shown = subprocess.run(["scontrol", "show", "job", sweep.job_id], env=sweep.env, capture_output=True, text=True, timeout=30).stdout
    assert "Restarts=1" in shown
    # the resumed run finished all its epochs and recorded one completed result
    assert completed(job / "metrics.json")
    last = Path(record(job)["checkpoints"]["last"])
    import torch

    saved = torch.load(hpc[-1], map_location="cpu", weights_only=True)
    final = torch.load(last, map_location="cpu", weights_only=True)
    assert saved["global_step"] < final["global_step"] == 6 * 3  # 6 epochs of 3 batches, the rest after the restart
    assert final["epoch"] == 5


# Submit and leave: two tiny jobs; the command returns at once, the same command reports, a
# cancelled job (as a lost node leaves it) is submitted again, and the last call prints the table.
LEAVE = [
    "-m", "hydra/launcher=slurm", "hydra.launcher.wait=false", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1",
    "experiment=seresnet_digits", "debug=limit", "trainer.max_epochs=1", "callbacks.progress_bar=null", "seed=1,2",
]


def test_submit_and_leave_reports_resubmits_failed_jobs_and_ends_with_the_table(slurm_env, tmp_path):
    def same_command() -> str:
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, str(ROOT / "run.py"), *LEAVE, f"paths.log_dir={tmp_path}"],
            cwd=ROOT, env=slurm_env, capture_output=True, text=True, timeout=timeout_for(0.5),
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        print(f"--- {time.perf_counter() - started:.1f} s\n{done.stdout}")
        return done.stdout + done.stderr

    def queued() -> dict[str, str]:
        out = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-o", "%i %T"], env=slurm_env, capture_output=True, text=True, timeout=30).stdout
        return dict(line.split() for line in out.splitlines())

    def record() -> dict:
        return {job["num"]: job["job_ids"] for job in json.loads((sweep_dir / "slurm_jobs.json").read_text())["jobs"]}

    out = same_command()
    (sweep_dir,) = sweeps = [p for p in tmp_path.glob("debug/multiruns/*") if p.is_dir()]
    ids = record()
    assert sorted(ids) == [0, 1] and all(len(i) == 1 for i in ids.values())
    assert f"submitted 2 jobs to SLURM: {ids[0][0]} {ids[1][0]}" in out and "progress" in out
    assert {ids[0][0], ids[1][0]} <= set(queued())  # queued or running after the command returned

    out = same_command()  # at once: states only, nothing submitted
    assert record() == ids and "submitted again" not in out
    assert any(f"{ids[n][0]}" in line and ("pending" in line or "running" in line) for n in (0, 1) for line in out.splitlines())

    subprocess.run(["scancel", ids[1][0]], env=slurm_env, check=True, timeout=30)
    deadline = time.time() + 60
    while queued().get(ids[1][0]) not in (None, "CANCELLED") and time.time() < deadline:
        time.sleep(0.5)
    out = same_command()
    again = record()
    assert again[0] == ids[0] and len(again[1]) == 2, again
    assert "job 1 failed" in out and f"submitted again as {again[1][1]}" in out

    results = [sweep_dir / ".submitit" / i[-1] / f"{i[-1]}_0_result.pkl" for i in (again[0], again[1])]
    deadline = time.time() + timeout_for(2)
    while not all(p.is_file() for p in results) and time.time() < deadline:
        time.sleep(1)
    out = same_command()
    assert "2 done" in out and "sweep summary" in out and record() == again
    assert [completed(sweep_dir / n / "metrics.json") for n in ("0", "1")] == [True, True]
    assert "2 completed jobs" in (sweep_dir / "aggregate.md").read_text()
    assert [p for p in tmp_path.glob("debug/multiruns/*") if p.is_dir()] == sweeps  # the later commands made no folders
