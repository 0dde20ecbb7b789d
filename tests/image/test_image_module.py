from functools import partial

import pytest
import torch

from lightning_modules.best_so_far import BestSoFar
from lightning_modules.classifier import Classifier
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


def test_evaluation_metrics_are_the_whole_splits_and_the_state_dict_is_unchanged():
    """val/loss and val/acc, updated per batch and logged once per epoch, are the loss (weighted by
    batch size, as Lightning's epoch mean) and the accuracy over every example of the split."""
    import lightning as L
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 10))
    module = Classifier(net, partial(torch.optim.SGD, lr=0.1), num_classes=10, f1_macro=True)
    x, y = torch.randn(50, 1, 4, 4), torch.randint(0, 10, (50,))
    loader = DataLoader(TensorDataset(x, y), batch_size=16)  # 16, 16, 16 and 2: an uneven last batch
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    for _ in range(2):  # the second epoch starts afresh
        [metrics] = trainer.validate(module, loader)
        with torch.no_grad():
            logits = net(x)
        assert metrics["val/loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)
        assert metrics["val/acc"] == pytest.approx((logits.argmax(-1) == y).float().mean().item())
        assert 0 <= metrics["val/f1_macro"] <= 1
    assert not any(key.startswith(("val_loss", "test_loss")) for key in module.state_dict())


def test_training_accuracy_is_the_epochs_accuracy_over_every_example():
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 10))
    module = Classifier(net, partial(torch.optim.SGD, lr=0.0), num_classes=10)  # lr 0: the weights stay
    x, y = torch.randn(50, 1, 4, 4), torch.randint(0, 10, (50,))
    trainer = L.Trainer(max_epochs=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, accelerator="cpu", limit_val_batches=0)
    trainer.fit(module, DataLoader(TensorDataset(x, y), batch_size=16))
    with torch.no_grad():
        expected = (net(x).argmax(-1) == y).float().mean().item()
    assert trainer.callback_metrics["train/acc"].item() == pytest.approx(expected)
