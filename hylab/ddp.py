"""DDP plumbing: one run folder for all ranks, and a process left as it was found after a run.

Make Lightning's DDP subprocess launch reuse this run's folder, in single runs and sweeps.

Lightning re-launches the script for ranks > 0 with `sys.argv[1:]` plus
`hydra.run.dir=<HydraConfig.run.dir>`. Two things go wrong with Hydra as it is: run.dir may
be re-resolved in the child (a new timestamp), and in a sweep (`-m`) argv holds the whole
sweep while the job's folder is sweep.dir/subdir, not run.dir, so each child would start the
sweep again in a new folder. Before any Trainer exists we pin run.dir to this job's resolved
output dir and, in a sweep, replace argv by this job's own overrides plus `hydra.mode=RUN`
(an `hparams_search` config sets MULTIRUN itself, and the child would start the search again).
"""

import contextlib
import os
import sys

from omegaconf import open_dict, read_write

# Set by Lightning's launchers (or torchrun) for the processes of one run: restored after a run in
# this process, and kept out of a run started from it as a subprocess (the run store).
DISTRIBUTED_ENV = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "NODE_RANK", "LOCAL_RANK", "GLOBAL_RANK", "RANK", "LOCAL_WORLD_SIZE")


def is_rank_zero_process() -> bool:
    """Whether this process is rank 0 of its run, from the launcher's variables (no torch needed)."""
    return all(os.environ.get(name, "0") == "0" for name in ("RANK", "GLOBAL_RANK", "LOCAL_RANK", "NODE_RANK"))


@contextlib.contextmanager
def leaves_process_as_found():
    """Close the process group and restore the launcher's env vars: the next job of a sweep
    in this process must start a fresh DDP group, not reuse a dead one."""
    import torch

    saved = {name: os.environ.get(name) for name in DISTRIBUTED_ENV}
    try:
        yield
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def pin_run_dir_for_subprocesses() -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    output_dir = hydra_cfg.runtime.output_dir
    with read_write(hydra_cfg), open_dict(hydra_cfg):
        hydra_cfg.run.dir = output_dir
    if hydra_cfg.mode == RunMode.MULTIRUN:
        sys.argv = [sys.argv[0], *job_overrides_for_rank_processes(hydra_cfg.overrides.task)]


def job_overrides_for_rank_processes(task_overrides) -> list[str]:
    """The argv (after the script) that re-creates one sweep job as a single run."""
    return [*task_overrides, "hydra.mode=RUN"]
