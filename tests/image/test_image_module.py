from functools import partial

import pytest
import torch

from lightning_modules.classifier import BestSoFar, Classifier
from lightning_modules.image.nets.seresnet import seresnet_mnist


def make(compile: bool = False) -> Classifier:
    return Classifier(seresnet_mnist(), partial(torch.optim.AdamW, lr=1e-3), num_classes=10, compile=compile)


def test_compiled_net_keeps_checkpoint_keys(monkeypatch):
    compiled_modules = []
    compile_module = torch.nn.Module.compile

    def recording(module, *args, **kwargs):
        compiled_modules.append(module)
        return compile_module(module, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "compile", recording)
    plain, compiled = make(), make(compile=True)
    assert compiled_modules == [compiled.net]  # the net alone, in place: its parameter names stay
    assert list(compiled.state_dict()) == list(plain.state_dict())
    assert not any("_orig_mod" in key for key in compiled.state_dict())


def test_best_validation_accuracy_is_saved_with_the_module():
    module = make()
    module.val_acc_best(torch.tensor(0.8))
    module.val_acc_best(torch.tensor(0.7))
    state = module.state_dict()
    assert "val_acc_best.max_value" in state  # the name checkpoints have always used
    restored = make()
    restored.load_state_dict(state)
    assert restored.val_acc_best.compute() == torch.tensor(0.8)


def test_best_so_far_follows_each_metric_mode():
    holder = torch.nn.Module()
    BestSoFar({"val/acc": "max", "val/loss": "min"}).add_to(holder)
    for acc, loss in [(0.5, 2.0), (0.9, 1.5), (0.7, 1.0)]:
        holder.val_acc_best(torch.tensor(acc))
        holder.val_loss_best(torch.tensor(loss))
    assert holder.val_acc_best.compute().item() == pytest.approx(0.9)
    assert holder.val_loss_best.compute().item() == pytest.approx(1.0)


def test_prediction_metrics_are_the_accuracy_of_pred_vs_label():
    predictions = {"pred": torch.tensor([0, 1, 2, 3]), "label": torch.tensor([0, 1, 0, 0])}
    assert make().prediction_metrics(predictions) == {"predict/acc": 0.5}
    assert make().prediction_metrics({"probs": torch.zeros(2, 10)}) == {}
