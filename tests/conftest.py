import os

import pytest

os.environ.setdefault("HYDRA_FULL_ERROR", "1")


def pytest_collection_modifyitems(config, items):
    import importlib.util

    has_gpu = False
    if importlib.util.find_spec("torch"):
        import torch

        has_gpu = torch.cuda.is_available()
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(skip_gpu)
