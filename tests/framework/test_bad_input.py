"""Bad input stops a run in one line, before torch is imported; searches run as typed;
every record says what code, command and machine made it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, run_cli, run_dirs, timeout_for

BAD_VALUES = {
    "model.optimizer.lr=abc": "model.optimizer.lr='abc' is not allowed; expected a number",
    "data.batch_size=0": "data.batch_size=0 is out of range",
    "trainer.max_epochs=-5": "trainer.max_epochs=-5 is out of range; allowed: [-1, inf)",
    "model/optimizer=adamx": "model/optimizer=adamx is not an option of model/optimizer; choose one of: adamw, sgd",
    "mode=maximize": "mode='maximize' is not allowed; expected one of 'min', 'max'",
}


@pytest.mark.parametrize("override", list(BAD_VALUES))
def test_bad_values_stop_in_one_line_before_torch(tmp_path, override):
    done = run_cli([override], tmp_path, runs=0.5)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines == [f"error: {BAD_VALUES[override]}"] or (len(lines) == 1 and BAD_VALUES[override] in lines[0]), done.stderr
    assert "Traceback" not in done.stderr
    assert not run_dirs(tmp_path)  # nothing was trained, no record of a run that never started


CHECK_WITHOUT_TORCH = """
import sys
from pathlib import Path
from hylab.checks import check_config
from hylab.errors import UserError
from tests.helpers import compose_run
cfg = compose_run(sys.argv[1:], Path(sys.argv[0]).parent / "run")
try:
    check_config(cfg)
except UserError as err:
    print("UserError:", err)
print("torch imported:", "torch" in sys.modules)
"""


@pytest.mark.parametrize("override", ["model.optimizer.lr=abc", "data.batch_size=0", "trainer.max_epochs=-5"])
def test_the_checks_import_no_torch(tmp_path, override):
    script = tmp_path / "check.py"
    script.write_text(CHECK_WITHOUT_TORCH)
    done = subprocess.run([sys.executable, str(script), override], cwd=ROOT, capture_output=True, text=True, timeout=timeout_for(0.5),
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert "UserError:" in done.stdout and "torch imported: False" in done.stdout, done.stdout + done.stderr


@pytest.mark.parametrize("search,experiment", [("har_optuna", "har_finetune"), ("ris_optuna", "ris_hybrid"), ("seresnet_optuna", "seresnet_digits")])
def test_each_search_runs_as_typed(search, experiment):
    done = subprocess.run([sys.executable, str(ROOT / "run.py"), f"hparams_search={search}", "--cfg", "hydra"],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout_for(0.5))
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"experiment: {experiment}" in done.stdout


@pytest.mark.slow
def test_records_name_code_command_and_machine_and_evaluation_reports_the_checkpoints_own(tmp_path):
    """Also: a run's output holds Lightning's model summary without its FLOPs, and none of its adverts."""
    done = run_cli(["debug=limit", "trainer.max_epochs=1", "callbacks.progress_bar=null"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    output = done.stdout + done.stderr  # what the user reads: no advert, no deprecation from inside Lightning, no FLOPs of 0
    assert "Total params" in output and "Trainable params" in output
    for noise in ("💡", "litlogger", "LeafSpec", "FLOPs", "Flops"):
        assert noise not in output, noise
    (run_dir,) = run_dirs(tmp_path)
    record = json.loads((run_dir / "metrics.json").read_text())
    prov = record["provenance"]
    assert len(prov["git"]["commit"]) == 40 and isinstance(prov["git"]["dirty"], bool)
    if prov["git"]["dirty"]:
        assert (run_dir / prov["git"]["diff_file"]).is_file()
    assert "run.py" in prov["command"] and "debug=limit" in prov["command"]
    for package in ("torch", "lightning", "hydra-core", "omegaconf", "timm", "torchmetrics", "optuna", "tokenizers"):
        assert prov["packages"][package], package
    assert prov["machine"]["cpu"] and prov["machine"]["cpu_count"] >= 1 and prov["machine"]["gpus"] == []

    last = run_dir / "checkpoints" / "last.ckpt"
    evaluated = run_cli(["task=test", f"ckpt_path={last}", "callbacks.progress_bar=null"], tmp_path / "eval")
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    (eval_dir,) = run_dirs(tmp_path / "eval")
    eval_record = json.loads((eval_dir / "metrics.json").read_text())
    assert eval_record["checkpoint_provenance"]["run_dir"] == str(run_dir)
    assert eval_record["checkpoint_provenance"]["git"]["commit"] == prov["git"]["commit"]
    assert eval_record["provenance"]["command"] != prov["command"]
