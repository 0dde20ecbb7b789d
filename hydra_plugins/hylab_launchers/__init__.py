"""hydra/launcher=slurm: hydra-submitit-launcher's SLURM launcher, behind a clear message when the
optional plugin is not installed (`uv sync --extra slurm`). Hydra imports every module under
hydra_plugins at start-up, so nothing here imports the plugin until the launcher is built.
`wait=false` submits and returns (hylab/slurm_submit.py)."""

import importlib.util
import sys

from hydra.plugins.launcher import Launcher
from omegaconf import OmegaConf

PLUGIN = "hydra_plugins.hydra_submitit_launcher"
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


class SlurmLauncher(Launcher):
    """Delegates to hydra_submitit_launcher's SlurmLauncher (same parameters), which waits for the
    jobs; with `wait=false` the command submits them and returns instead."""

    def __init__(self, wait: bool = True, **params):
        try:
            available = importlib.util.find_spec(PLUGIN) is not None
        except ModuleNotFoundError:
            available = False
        if not available:
            # Hydra reports an ImportError from a launcher's constructor as a missing plugin.
            raise ImportError("hydra/launcher=slurm needs the hydra-submitit-launcher plugin: install it with `uv sync --extra slurm`")
        from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as SubmititSlurmLauncher

        self.wait = bool(wait)
        self.params = {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v for k, v in params.items()}
        self.launcher = SubmititSlurmLauncher(**params)

    def setup(self, *, hydra_context, task_function, config) -> None:
        if not self.wait and str(config.hydra.sweeper.get("_target_")) != BASIC_SWEEPER:
            # a search needs each trial's result before it asks the next: it has to wait
            print(f"hydra.launcher.wait=false: {config.hydra.sweeper._target_} needs each job's result; drop wait=false (run the search itself as a SLURM job to leave it)", file=sys.stderr)
            raise SystemExit(2)
        self.context = {"hydra_context": hydra_context, "task_function": task_function, "config": config}
        self.launcher.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def launch(self, job_overrides, initial_job_idx: int):
        if self.wait:
            return self.launcher.launch(job_overrides, initial_job_idx)
        from hylab.slurm_submit import submit_and_leave

        submit_and_leave(self.launcher, self.params, self.context, job_overrides, initial_job_idx)
        raise SystemExit(0)  # the jobs run on: no results to hand to the sweeper, no end table yet
