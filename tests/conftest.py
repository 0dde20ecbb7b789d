import os

import pytest

os.environ.setdefault("HYDRA_FULL_ERROR", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # Tests run two at a time (pytest -n 2), one per core: one torch thread each, else each run's
    # thread pool spins against the other's and both slow down.
    os.environ.setdefault("OMP_NUM_THREADS", "1")


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
