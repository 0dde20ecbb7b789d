"""hydra/launcher=slurm: hydra-submitit-launcher's SLURM launcher, behind a clear message when the
optional plugin is not installed (`uv sync --extra slurm`). Hydra imports every module under
hydra_plugins at start-up, so nothing here imports the plugin until the launcher is built."""

import importlib.util

from hydra.plugins.launcher import Launcher

PLUGIN = "hydra_plugins.hydra_submitit_launcher"


class SlurmLauncher(Launcher):
    """Delegates to hydra_submitit_launcher's SlurmLauncher (same parameters)."""

    def __init__(self, **params):
        try:
            available = importlib.util.find_spec(PLUGIN) is not None
        except ModuleNotFoundError:
            available = False
        if not available:
            # Hydra reports an ImportError from a launcher's constructor as a missing plugin.
            raise ImportError("hydra/launcher=slurm needs the hydra-submitit-launcher plugin: install it with `uv sync --extra slurm`")
        from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as SubmititSlurmLauncher

        self.launcher = SubmititSlurmLauncher(**params)

    def setup(self, **kwargs) -> None:
        self.launcher.setup(**kwargs)

    def launch(self, job_overrides, initial_job_idx: int):
        return self.launcher.launch(job_overrides, initial_job_idx)
