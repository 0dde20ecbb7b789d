"""The RIS settings schemas accept exactly what the config gives and refuse bad values in one line."""

import subprocess
import sys

import pytest

from hylab.errors import UserError
from hylab.settings import check_node
from tests.helpers import EXPERIMENTS, ROOT, compose_run

RIS_EXPERIMENTS = [name for name in EXPERIMENTS if name.startswith("ris_")]


@pytest.mark.parametrize("experiment", RIS_EXPERIMENTS)
def test_every_ris_experiment_passes_its_schemas(experiment, tmp_path):
    cfg = compose_run([f"experiment={experiment}"], tmp_path)
    check_node(cfg.model, "model")
    check_node(cfg.data, "data")
    logger = {k: v for k, v in cfg.callbacks.ris_covariance_logger.items() if k != "_training_"}
    check_node(logger, "callbacks.ris_covariance_logger")


@pytest.mark.parametrize(("override", "message"), [
    ("model.beta=abc", "model.beta='abc' is not allowed; expected a number"),
    ("model.beta=1.5", "model.beta=1.5 is out of range"),
    ("model.k_from=guess", "model.k_from='guess' is not allowed"),
    ("model.loss_weights.count=-1", "model.loss_weights.count=-1.0 is out of range"),
    ("model.music.newton_steps=-2", "model.music.newton_steps=-2 is out of range"),
    ("model.refine=newton", "model.refine='newton' is not allowed"),
    ("model.ml.grid_step_deg=0", "model.ml.grid_step_deg=0.0 is out of range"),
    ("model.net.channels=0", "model.net.channels=0 is out of range"),
    ("+model.net.width=3", "model.net.width is not a setting of model.net"),
    ("data.n_train=-4", "data.n_train=-4 is out of range"),
    ("data.geometry.rows=0", "data.geometry.rows=0 is out of range"),
])
def test_a_bad_value_is_a_one_line_error_naming_the_key(override, message, tmp_path):
    cfg = compose_run(["experiment=ris_hybrid", override], tmp_path)
    with pytest.raises(UserError) as caught:  # data first: the model takes its geometry from there
        check_node(cfg.data, "data")
        check_node(cfg.model, "model")
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_the_packages_and_their_settings_import_no_torch():
    code = ("import sys, datamodules.ris.settings, lightning_modules.ris.settings, lightning_modules.ris; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_the_covariance_logger_stays_out_of_the_training_hash(tmp_path):
    from hylab.store import training_hash

    def hash_of(*overrides):
        return training_hash(compose_run(["experiment=ris_hybrid", *overrides], tmp_path))

    base = hash_of()
    assert hash_of("callbacks.ris_covariance_logger.plot_spectrum=false") == base
    assert hash_of("callbacks.ris_covariance_logger.every_n_steps=5") == base
    assert hash_of("model.beta=0.5") != base
