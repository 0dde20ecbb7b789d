"""The DeiT experiments end to end: fast_dev_run of each, and the teacher from the run store
(trained on first use, reused afterwards, also by every rank of a DDP run)."""

import json
import logging
import math

import pytest

from callbacks.distillation_teacher import DistillationTeacher

from tests.helpers import run_cli, run_dirs, run_in_process
from tests.image.conftest import teacher_from


QUIET = ["callbacks.progress_bar=null"]


@pytest.mark.parametrize("experiment", ["deit_scratch", "deit_distill", "deit_token_distill"])
def test_experiment_fast_dev_run(experiment, teacher_checkpoint, tmp_path):
    overrides = [f"experiment={experiment}", "debug=fdr", "data.batch_size=16", "data.eval_batch_size=64", *QUIET]
    if experiment != "deit_scratch":
        overrides += teacher_from(teacher_checkpoint)
    value, record = run_in_process(overrides, tmp_path / "run")
    assert record["status"] == "completed" and record["experiment"] == experiment
    assert math.isfinite(record["metrics"]["test/loss"]) and value == record["metrics"]["val/acc_best"]
    assert record["progress"]["global_step"] == 1
    expected_terms = {"deit_scratch": {"cls", "dist"}, "deit_distill": {"cls", "dist"}, "deit_token_distill": {"cls", "dist", "tok"}}
    logged = {name.removeprefix("train/loss_") for name in record["metrics"] if name.startswith("train/loss_") and name != "train/loss_epoch" and not name.startswith("train/loss_step")}
    assert logged == expected_terms[experiment]
    assert ("train/alpha" in record["metrics"]) == (experiment == "deit_distill")


@pytest.mark.slow
def test_teacher_is_trained_once_through_the_store_then_reused_by_every_ddp_rank(tmp_path, caplog):
    teacher = {"experiment": "seresnet_digits", "overrides": ["debug=limit", "trainer.max_epochs=1", "callbacks.progress_bar=null"]}
    store = {"log_dir": str(tmp_path), "store_dir": str(tmp_path / "store")}
    with caplog.at_level(logging.INFO):
        first = DistillationTeacher(**teacher, **store)  # no stored run yet: trained now, in a subprocess
        assert "training seresnet_digits" in caplog.text
        (trained,) = list((tmp_path / "debug" / "runs").glob("*_store-*"))
        caplog.clear()
        again = DistillationTeacher(**teacher, **store)
        assert f"reusing stored run {trained.name}" in caplog.text and "training" not in caplog.text
    assert first.source == again.source and first.source["run_id"] == trained.name
    assert not first.net.training and not any(p.requires_grad for p in first.net.parameters())

    overrides = json.dumps(teacher["overrides"]).replace(" ", "")
    student = [
        "experiment=deit_distill", "data=digits", "model.net.patch_size=2", "debug=fdr", *QUIET, "trainer=ddp_cpu",
        "callbacks.distillation_teacher.experiment=seresnet_digits", f"callbacks.distillation_teacher.overrides={overrides}",
    ]
    done = run_cli(student, tmp_path, runs=5)
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout + done.stderr
    assert "training seresnet_digits" not in output and f"distillation teacher: run {trained.name}" in output
    assert len(list((tmp_path / "debug" / "runs").glob("*_store-*"))) == 1  # not trained again
    (ddp_run,) = [d for d in run_dirs(tmp_path) if "_store-" not in d.name]
    rank_one = (ddp_run / "train_ddp_process_1.log").read_text()
    assert f"distillation teacher: run {trained.name}" in rank_one  # rank 1 loaded the same teacher itself
    record = json.loads((ddp_run / "metrics.json").read_text())
    assert record["status"] == "completed" and "train/loss_dist" in record["metrics"]


def comparison_line(done) -> str:
    lines = [line for line in (done.stdout + done.stderr).splitlines() if "student test/acc" in line]
    assert lines, (done.stdout + done.stderr)[-3000:]
    return lines[-1]


@pytest.mark.slow
def test_the_student_run_ends_comparing_it_with_its_teacher_and_the_stored_scratch_run(tmp_path):
    common = ["data=digits", "model.net.patch_size=2", "debug=limit", "model.net.conv_stem=false", *QUIET]
    teacher = ["callbacks.distillation_teacher.experiment=seresnet_digits",
               "callbacks.distillation_teacher.overrides=['debug=limit','trainer.max_epochs=1']"]
    first = run_cli(["experiment=deit_distill", *common, *teacher], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    line = comparison_line(first)
    assert "teacher (seresnet_digits)" in line and "points" in line
    assert "deit_scratch with the same overrides: not in the store" in line
    assert "python run.py experiment=deit_scratch data=digits model.net.patch_size=2 debug=limit model.net.conv_stem=false" in line

    scratch = run_cli(["experiment=deit_scratch", *common], tmp_path)
    assert scratch.returncode == 0, scratch.stderr[-3000:]
    second = run_cli(["experiment=deit_distill", *common, *teacher], tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    records = {d: json.loads((d / "metrics.json").read_text()) for d in run_dirs(tmp_path)}
    scratch_record = next(r for r in records.values() if r.get("experiment") == "deit_scratch")
    student = max((r for r in records.values() if r.get("experiment") == "deit_distill"), key=lambda r: r["started_at"])
    line = comparison_line(second)
    assert f"student test/acc {student['metrics']['test/acc']:.4f}" in line
    expected = 100 * (student["metrics"]["test/acc"] - scratch_record["metrics"]["test/acc"])
    assert f"with the same overrides {scratch_record['metrics']['test/acc']:.4f}: {expected:+.1f} points (run {scratch_record['run_dir']})" in line
