from functools import partial

import torch

from lightning_modules.image_classification import ImageClassifier
from lightning_modules.nets.seresnet import seresnet_mnist


def make(compile: bool = False) -> ImageClassifier:
    return ImageClassifier(seresnet_mnist(), partial(torch.optim.AdamW, lr=1e-3), num_classes=10, compile=compile)


def test_compiled_net_keeps_checkpoint_keys():
    plain, compiled = make(), make(compile=True)
    assert compiled.net._compiled_call_impl is not None and plain.net._compiled_call_impl is None
    assert list(compiled.state_dict()) == list(plain.state_dict())
    assert not any("_orig_mod" in key for key in compiled.state_dict())


def test_best_validation_accuracy_is_saved_with_the_module():
    module = make()
    module.val_acc_best(torch.tensor(0.8))
    state = module.state_dict()
    assert "val_acc_best.max_value" in state
    restored = make()
    restored.load_state_dict(state)
    assert restored.val_acc_best.compute() == torch.tensor(0.8)
