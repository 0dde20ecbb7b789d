"""The wearable nets and the classifier's macro-F1 and layer-wise learning rates."""

from functools import partial

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from hylab.errors import UserError
from lightning_modules.classifier import Classifier, check_parts, net_parts
from lightning_modules.har.nets import HarCNN, HarTransformer


def HarClassifier(net, optimizer, **kwargs) -> Classifier:
    """The classifier as conf/model/har_classifier.yaml sets it up."""
    return Classifier(net, optimizer, **{"num_classes": 7, "f1_macro": True, **kwargs})


@pytest.mark.parametrize("net", [HarCNN(), HarTransformer()], ids=["cnn", "transformer"])
def test_nets_map_windows_to_logits_and_train(net):
    x = torch.randn(5, 6, 100)
    logits = net(x)
    assert logits.shape == (5, 7)
    torch.nn.functional.cross_entropy(logits, torch.arange(5)).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    net.eval()
    # windows are classified independently (up to float rounding, which depends on the batch size)
    torch.testing.assert_close(net(x[:2]), net(x)[:2], rtol=1e-5, atol=1e-6)


def test_cnn_window_length_is_free_and_parts_are_named():
    net = HarCNN(channels=(8, 16))
    assert net(torch.randn(2, 6, 64)).shape == net(torch.randn(2, 6, 200)).shape == (2, 7)
    assert net_parts(net) == ["features", "features.0", "features.1", "dropout", "head"]


def test_transformer_checks_its_shapes():
    with pytest.raises(UserError, match=r"model.net.patch_size=7 must divide data.window_size=100"):
        HarTransformer(patch_size=7)
    with pytest.raises(UserError, match=r"model.net.heads=3 must divide model.net.dim=64"):
        HarTransformer(heads=3)
    assert HarTransformer(window_size=50, patch_size=5).pos.shape == (1, 10, 64)
    assert "pos" in HarTransformer().no_weight_decay()


def test_check_parts_names_the_key_and_lists_the_parts():
    net = HarCNN()
    check_parts(net, ["head", "features.0", "head.bias"], "finetune.freeze")
    with pytest.raises(UserError, match=r"finetune.freeze: 'backbone' is not a part of the net; its parts: features, features.0"):
        check_parts(net, ["backbone"], "finetune.freeze")


def test_macro_f1_is_the_mean_of_per_class_f1():
    module = HarClassifier(HarCNN(), partial(torch.optim.AdamW, lr=1e-3), num_classes=7)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 7, 200)
    predicted = np.where(rng.random(200) < 0.6, labels, rng.integers(0, 7, 200))
    logits = torch.nn.functional.one_hot(torch.from_numpy(predicted), 7).float()
    module.val_f1(logits, torch.from_numpy(labels))
    assert module.val_f1.compute().item() == pytest.approx(f1_score(labels, predicted, average="macro"), abs=1e-6)


def test_lr_scales_give_net_parts_their_own_rates():
    module = HarClassifier(HarCNN(), partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.01), lr_scales={"head": 10.0})
    optimizer = module.configure_optimizers()
    rates = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert rates[id(module.net.head.weight)] == pytest.approx(1e-2)
    assert rates[id(module.net.features[0][0].weight)] == pytest.approx(1e-3)
    with pytest.raises(UserError, match=r"model.lr_scales: 'heads' is not a part of the net"):
        HarClassifier(HarCNN(), partial(torch.optim.AdamW, lr=1e-3), lr_scales={"heads": 2.0})
