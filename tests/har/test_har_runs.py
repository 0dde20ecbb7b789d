"""The wearable experiments end to end, in-process, through the config path run.py uses.

The fine-tuning tests share one base model, trained here in-process and registered in the run
store; the fine-tuning jobs then find it in the store (no base training subprocess).
"""

import json
import math
from pathlib import Path

import pytest
import torch

from hylab.errors import UserError
from hylab.store import RunStore
from tests.helpers import compose_run, run_in_process

TINY = ["debug=limit", "callbacks.progress_bar=null"]
FINETUNE = ["experiment=har_finetune", *TINY, 'finetune.base.extra_overrides=["debug=limit"]']
LOGGED = {"val/acc", "val/f1_macro", "val/f1_macro_best", "test/acc", "test/f1_macro"}


@pytest.mark.parametrize("overrides", [
    ["experiment=har_base"],
    ["experiment=har_base", "model/net=har_transformer", "data.augment.jitter=0.05", "data.augment.time_warp=0.2"],
    ["experiment=har_finetune", "finetune.mode=target_only"],
], ids=["base_cnn", "base_transformer_augmented", "finetune_target_only"])
def test_experiment_fast_dev_run(overrides, tmp_path):
    value, record = run_in_process([*overrides, "debug=fdr"], tmp_path / "run")
    assert record["status"] == "completed" and value is not None
    assert LOGGED <= set(record["metrics"])
    assert math.isfinite(record["metrics"]["test/loss"]) and value == record["metrics"]["val/f1_macro_best"]


@pytest.fixture(scope="module")
def stored_base(tmp_path_factory) -> Path:
    """A folder whose logs/store holds the base model the FINETUNE jobs ask for."""
    folder = tmp_path_factory.mktemp("har")
    cfg = compose_run(FINETUNE, folder / "compose")
    overrides = [*cfg.callbacks.base_model.base_overrides, *cfg.callbacks.base_model.extra_base_overrides]
    _, record = run_in_process(["experiment=har_base", *overrides], folder / "base")
    assert RunStore(folder / "logs" / "store").find(record["config_hash"]) is not None
    return folder


def net_state(checkpoint_path) -> dict[str, torch.Tensor]:
    state = torch.load(checkpoint_path, weights_only=True)["state_dict"]
    return {name[len("net."):]: value for name, value in state.items() if name.startswith("net.")}


def test_fine_tuning_starts_from_the_stored_base_with_frozen_layers_and_own_rates(stored_base):
    run_dir = stored_base / "full"
    overrides = [*FINETUNE, "finetune.mode=full_fine_tuning", "finetune.freeze=[features.0]", "finetune.lr_scales={head: 10.0}"]
    _, record = run_in_process(overrides, run_dir)
    assert record["status"] == "completed" and LOGGED <= set(record["metrics"])
    base = json.loads((run_dir / "base_model.json").read_text())
    assert base["key"] == json.loads((stored_base / "base" / "metrics.json").read_text())["config_hash"]
    assert not list(stored_base.rglob("*_store-*"))  # the stored base was reused, nothing trained for it
    before, after = net_state(base["checkpoint"]), net_state(record["checkpoints"]["last"])
    for name in before:
        if name.startswith("features.0."):  # weights and BatchNorm statistics of the frozen block
            assert torch.equal(before[name], after[name]), name
    assert not torch.equal(before["head.weight"], after["head.weight"])
    assert not torch.equal(before["features.1.0.weight"], after["features.1.0.weight"])
    groups = torch.load(record["checkpoints"]["last"], weights_only=True)["optimizer_states"][0]["param_groups"]
    assert sorted({round(g["initial_lr"], 6) for g in groups}) == [0.001, 0.01]  # base lr and the head's 10x


def test_target_only_fine_tuning_uses_the_same_base(stored_base):
    _, record = run_in_process([*FINETUNE, "finetune.mode=target_only_fine_tuning"], stored_base / "target_ft")
    assert record["status"] == "completed" and LOGGED <= set(record["metrics"])
    base = json.loads((stored_base / "target_ft" / "base_model.json").read_text())
    assert base["key"] == json.loads((stored_base / "base" / "metrics.json").read_text())["config_hash"]


@pytest.mark.parametrize("overrides, message", [
    (["finetune.mode=fine_tune_everything"], r"finetune_mode='fine_tune_everything' is not allowed; expected one of 'full_fine_tuning', "),
    (["finetune.mode=target_only", "finetune.freeze=[features.0]"],
     r"finetune.freeze=\['features.0'\] adjusts layers of a base model, but finetune.mode=target_only trains a fresh one"),
    (["finetune.mode=target_only", "finetune.lr_scales={head: 2}"], r"finetune.lr_scales=\{'head': 2\} adjusts layers of a base model"),
    (["finetune.freeze=[head]", "finetune.lr_scales={head: 2}"], r"finetune.lr_scales sets a rate for 'head', which finetune.freeze keeps fixed"),
    (["finetune.freeze=[backbone]"], r"finetune.freeze: 'backbone' is not a part of the net; its parts: features, "),
    (["model.net.channels=[16,16,16]"], r"finetune.base=.* does not fit the net: shape mismatch"),
], ids=["mode", "freeze_without_base", "rates_without_base", "freeze_and_rate", "unknown_part", "net_mismatch"])
def test_bad_fine_tuning_requests_fail_before_training(stored_base, overrides, message, tmp_path):
    run_dir = stored_base / tmp_path.name  # beside the stored base: the store is found
    with pytest.raises(UserError, match=message):
        run_in_process([*FINETUNE, *overrides], run_dir)
    assert not list(run_dir.rglob("*.ckpt"))
    assert not list(stored_base.rglob("*_store-*"))
