"""Every image / DeiT experiment passes its settings schemas; bad values fail with one line naming the key."""

import pytest

from hylab.errors import UserError
from tests.helpers import EXPERIMENTS, assert_bad_setting, check_settings

IMAGE_EXPERIMENTS = [e for e in EXPERIMENTS if e.startswith(("seresnet_", "deit_", "mlp_"))]


@pytest.mark.parametrize("experiment", IMAGE_EXPERIMENTS)
def test_every_experiment_fits_its_schemas(experiment, tmp_path):
    check_settings([f"experiment={experiment}"], tmp_path / "run")


@pytest.mark.parametrize("override,message", [
    ("model.label_smoothing=2", r"^model.label_smoothing=2.0 is out of range; allowed: \[0, 1\)$"),
    ("model.distillation.mode=wrong", r"^model.distillation.mode='wrong' is not allowed; expected one of 'none', 'hard', 'soft'$"),
    ("model.distillation.tau=0", r"^model.distillation.tau=0.0 is out of range"),
    ("model.token_distillation.proj_dim=0", r"^model.token_distillation.proj_dim=0 is out of range"),
    ("model.net.size=huge", r"^model.net.size='huge' is not allowed; expected one of 'micro'"),
    ("data.batch_size=0", r"^data.batch_size=0 is out of range; allowed: \[1, inf\)$"),
    ("data.mixing.mode=row", r"^data.mixing.mode='row' is not allowed"),
    ("+data.augment.rotate=10", r"^data.augment.rotate is not a setting of data.augment; allowed: crop_padding, hflip, cutout_size$"),
    ("callbacks.distillation_teacher.experiment=null", r"^callbacks.distillation_teacher: give exactly one of checkpoint"),
])
def test_bad_values_fail_with_one_line_naming_the_key(override, message, tmp_path):
    assert_bad_setting(["experiment=deit_distill", override], message, tmp_path / "run")


def test_seresnet_settings_are_checked_too(tmp_path):
    with pytest.raises(UserError, match=r"^model.net.se_reduction=0 is out of range"):
        check_settings(["experiment=seresnet_digits", "model.net.se_reduction=0"], tmp_path / "run")
    with pytest.raises(UserError, match=r"^data.val_fraction=1.5 is out of range"):
        check_settings(["experiment=seresnet_digits", "data.val_fraction=1.5"], tmp_path / "run")
