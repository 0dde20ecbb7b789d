"""At the end of every multirun, the sweep's table: test metrics as mean ± std over the jobs that
share the values of the swept keys (seeds pooled), also written as aggregate.md / aggregate.csv
into the sweep folder. A sweep over experiments puts each job under its own experiment's folder
(`<log_dir>/<task_name>/multiruns/<sweep id>/<job>`), so the jobs are gathered from every
folder of that sweep id. `python run.py -m experiment=a,b seed=0,1,2` thus ends with a
three-seed comparison of a and b; jobs reused from the run store count like fresh ones.
Reads files only (hylab/aggregate.py)."""

import logging
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from hylab.aggregate import read_jobs, varied_keys, write_summary

log = logging.getLogger("hylab.sweep")


class SweepSummary(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        folders = sweep_folders(sweep_dir)
        if not folders:
            return
        jobs, unfinished = [], []
        for folder in folders:
            done, left = read_jobs(folder)
            jobs, unfinished = jobs + done, unfinished + left
        if not jobs:
            log.warning(f"no completed job under {sweep_dir}: no sweep table")
            return
        by = varied_keys(jobs)
        setting = f"by {', '.join(by)}" if by else "of one setting"
        log.info(f"sweep summary {setting} (seeds pooled):\n" + write_summary(sweep_dir, jobs, unfinished, by))


def sweep_folders(sweep_dir: Path) -> list[Path]:
    """The folders of this sweep id next to `sweep_dir`'s task folder: <log_dir>/*/multiruns/<id>."""
    log_dir = sweep_dir.parent.parent.parent
    found = {folder for folder in log_dir.glob(f"*/{sweep_dir.parent.name}/{sweep_dir.name}") if folder.is_dir()}
    return sorted(found | ({sweep_dir} if sweep_dir.is_dir() else set()))
