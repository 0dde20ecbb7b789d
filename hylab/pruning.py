"""Pruning inside a Hydra search: optuna's pruners, named by `hydra.sweeper.pruner`.

The sweeper (hylab/sweeper.py) runs each trial as a Hydra job numbered by the study
(`hydra.job.num` = trial number). Inside the job, `pruning_callbacks` opens the study through
its storage (the same SQLite, PostgreSQL or journal URL the sweeper uses, so it works in the
process of the local launcher, in a local_parallel worker and in a SLURM job alike) and adds
`callbacks.pruning.OptunaPruning`, which reports the monitored metric after every validation and
stops the run when the pruner says so. The job marks its trial (user attr `pruned_at_epoch`); the
sweeper then tells optuna the trial is PRUNED. Torch-free: the sweeper imports it.
"""

import logging

import optuna

log = logging.getLogger("hylab.pruning")

# optuna's own pruners, with optuna's own defaults; `hydra.sweeper.pruner_settings` passes
# keyword arguments to the constructor (e.g. n_startup_trials for median).
PRUNERS = {
    "none": optuna.pruners.NopPruner,
    "median": optuna.pruners.MedianPruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
}
# On a trial a job stopped: the number of epochs it trained (1-based).
PRUNED_ATTR = "pruned_at_epoch"


def make_pruner(name: str, settings: dict | None = None) -> optuna.pruners.BasePruner:
    """optuna's pruner named `name`; ValueError in one line for an unknown name or setting."""
    if str(name) not in PRUNERS:
        raise ValueError(f"hydra.sweeper.pruner={name}: not a pruner; choose one of: {', '.join(PRUNERS)}")
    try:
        return PRUNERS[str(name)](**dict(settings or {}))
    except (TypeError, ValueError) as err:
        raise ValueError(f"hydra.sweeper.pruner_settings={dict(settings or {})} does not suit pruner={name}: {err}") from None


def check_pruning(name: str, settings: dict | None, storage_url: str | None, n_objectives: int) -> None:
    """What a search with a pruner needs, checked before any trial runs."""
    make_pruner(name, settings)
    if name == "none":
        return
    if n_objectives != 1:
        raise ValueError(f"hydra.sweeper.pruner={name}: optuna prunes single-objective studies only; use pruner=none")
    if not storage_url:
        raise ValueError(f"hydra.sweeper.pruner={name}: the trials report to the study through its storage; set hydra.sweeper.storage")


def pruned_epoch(trial: optuna.trial.FrozenTrial) -> int | None:
    return trial.user_attrs.get(PRUNED_ATTR)


def open_trial(storage_url: str, study_name: str, number: int, pruner: optuna.pruners.BasePruner) -> optuna.Trial:
    """Trial `number` of a stored study, for reporting from another process (optuna's public
    storage API and `optuna.trial.Trial(study, trial_id)`)."""
    from hylab.sweeper import make_storage

    storage = make_storage(storage_url)
    study = optuna.load_study(study_name=study_name, storage=storage, pruner=pruner)
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study_name), number)
    return optuna.trial.Trial(study, trial_id)


def search_pruner_settings() -> dict | None:
    """The sweeper's pruner settings when this process is a trial of a search that prunes."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    hydra = HydraConfig.get()
    sweeper = hydra.sweeper
    if str(sweeper.get("pruner") or "none") == "none" or not sweeper.get("storage"):
        return None
    return {
        "storage": str(sweeper.storage),
        "study_name": str(sweeper.study_name),
        "number": int(hydra.job.num),
        "pruner": str(sweeper.pruner),
        "settings": dict(sweeper.get("pruner_settings") or {}),
    }


def pruning_callbacks(cfg) -> list:
    """[OptunaPruning] for a trial of a search that prunes, else []."""
    found = search_pruner_settings()
    if found is None:
        return []
    if not cfg.get("monitor"):
        log.warning(f"hydra.sweeper.pruner={found['pruner']} but this run sets no monitor: it reports nothing and is never pruned")
        return []
    from callbacks.pruning import OptunaPruning

    pruner = make_pruner(found["pruner"], found["settings"])
    trial = open_trial(found["storage"], found["study_name"], found["number"], pruner)
    return [OptunaPruning(trial, str(cfg.monitor))]
