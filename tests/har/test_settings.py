"""Every HAR experiment passes its settings schemas; bad values fail with one line naming the key."""

import pytest

from tests.helpers import EXPERIMENTS, assert_bad_setting, check_settings


@pytest.mark.parametrize("experiment", [e for e in EXPERIMENTS if e.startswith("har_")])
@pytest.mark.parametrize("net", ["har_cnn", "har_transformer"])
def test_every_experiment_fits_its_schemas(experiment, net, tmp_path):
    check_settings([f"experiment={experiment}", f"model/net={net}"], tmp_path / "run")


@pytest.mark.parametrize("override,message", [
    ("model.label_smoothing=2", r"^model.label_smoothing=2.0 is out of range; allowed: \[0, 1\)$"),
    ("model.lr_scales={head:0}", r"^model: lr_scales.head=0.0 must be > 0$"),
    ("data.batch_size=0", r"^data.batch_size=0 is out of range; allowed: \[1, inf\)$"),
    ("data.overlap=1.0", r"^data.overlap=1.0 is out of range; allowed: \[0, 1\)$"),
    ("data.target_split.val=0.5", r"^data.target_split: target_split fractions 0.5, 0.5, 0.3 must sum to 1$"),
    ("data.normalize_with=target", r"^data.normalize_with='target' is not allowed; expected one of 'base', 'train'$"),
    ("finetune.mode=all", r"^data.finetune_mode='all' is not allowed; expected one of 'full_fine_tuning'"),
    ("model.net.kernel_size=0", r"^model.net.kernel_size=0 is out of range"),
])
def test_bad_values_fail_with_one_line_naming_the_key(override, message, tmp_path):
    assert_bad_setting(["experiment=har_finetune", override], message, tmp_path / "run")
