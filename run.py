"""hylab's one entry point: compose a run from conf/ and launch it.

    python run.py                                  # the default experiment
    python run.py experiment=seresnet_fmnist trainer.max_epochs=5
    python run.py -m model.optimizer.lr=1e-3,3e-3  # a sweep

torch and lightning are imported only once a run starts, so `--cfg job` and `--help` stay fast.
"""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

import hylab.resolvers  # noqa: F401  (registers ${run_uid:} and ${project_root:} before composing)
from hylab.cli import check_group_choices, expand_overrides_files, normalize_group_overrides
from hylab.preflight import preflight

CONF_DIR = Path(__file__).resolve().parent / "conf"


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from hylab.runner import run_hydra_job

    return run_hydra_job(cfg)


if __name__ == "__main__":
    sys.argv = normalize_group_overrides(expand_overrides_files(sys.argv), CONF_DIR)
    check_group_choices(sys.argv, CONF_DIR)
    preflight(sys.argv, CONF_DIR)  # bad input stops in one line before Hydra makes a run folder
    main()
