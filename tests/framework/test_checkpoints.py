"""Reading hylab checkpoints: a checkpoint written before the package move is refused in one
line, and still evaluates through an experiment's config (which loads only its state_dict)."""

from pathlib import Path

import pytest
import torch

from hylab.checkpoints import load_net
from hylab.errors import UserError
from tests.helpers import run_in_process

LEGACY = Path(__file__).resolve().parent.parent / "fixtures" / "legacy_seresnet_digits.ckpt"
OLD_TARGET = "lightning_modules.nets.seresnet.seresnet_mnist"
QUIET = ["debug=limit", "callbacks.progress_bar=null"]


def test_checkpoint_from_before_the_move_is_refused_in_one_line():
    with pytest.raises(UserError) as caught:
        load_net(LEGACY, "teacher")
    message = str(caught.value)
    assert "\n" not in message
    assert f"teacher={LEGACY}" in message and OLD_TARGET in message
    assert "retrain" in message and f"task=test ckpt_path={LEGACY}" in message


def test_checkpoint_from_before_the_move_evaluates_with_the_experiment_config(tmp_path):
    _, record = run_in_process([*QUIET, "task=test", f"ckpt_path={LEGACY}"], tmp_path / "test")
    assert record["status"] == "completed" and record["metrics"]["test/acc"] > 0.5  # 10 classes: chance is 0.1


def test_predict_saves_predictions_and_asks_the_module_for_its_metrics(tmp_path, monkeypatch):
    from hydra.utils import get_class

    from tests.helpers import compose_run

    module_class = get_class(compose_run([], tmp_path / "compose").model._target_)
    seen = {}

    def prediction_metrics(self, predictions: dict) -> dict:
        seen.update(predictions)
        return {"predict/count": float(len(next(iter(predictions.values()))))}

    monkeypatch.setattr(module_class, "prediction_metrics", prediction_metrics, raising=False)
    _, record = run_in_process([*QUIET, "task=predict", f"ckpt_path={LEGACY}"], tmp_path / "predict")
    saved = torch.load(record["predictions"], weights_only=True)
    assert set(saved) == set(seen) and saved
    count = len(next(iter(saved.values())))
    assert count > 0 and record["metrics"] == {"predict/count": float(count)}
