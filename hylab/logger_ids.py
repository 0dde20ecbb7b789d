"""Which TensorBoard folder, MLflow run and W&B run a fit run writes to, decided before training.

The run record keeps them (`loggers` in metrics.json). A run that continues an unfinished one
(hylab/resume.py) passes the unfinished run's identities to the same loggers through each
logger's own resume options, so a killed run and the command run again write one curve:

- TensorBoard: the same `save_dir`/`name`/`version` (one folder) and `purge_step` = the step of
  the checkpoint resumed from: TensorBoard hides what the killed run logged from that step on,
  and the resumed run logs it again.
- MLflow: the same `run_id` (a new fit run creates its MLflow run here, so the id is in the
  record before training).
- W&B: the same `id` (with `resume="allow"`, which Lightning's WandbLogger sets) and the same
  `save_dir`: each process writes its offline folder `offline-run-<time>-<id>` beside the
  earlier ones, and `wandb sync` uploads them in order as one run.

MLflow and W&B cannot hide logged steps, so the resumed run leaves out the steps they already
hold (hylab/logged_steps.py). Imports no torch; mlflow only when an MLflow logger is configured.
"""

import secrets
import string
from pathlib import Path

from omegaconf import DictConfig, open_dict

from hylab.errors import UserError
from hylab.instantiate import named_configs

TENSORBOARD, MLFLOW, WANDB = "TensorBoardLogger", "MLFlowLogger", "WandbLogger"


def logger_kind(node: DictConfig) -> str:
    return str(node._target_).rsplit(".", 1)[-1]


def new_wandb_id() -> str:
    """An id of the form W&B makes itself (8 lowercase letters and digits)."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


def create_mlflow_run(node: DictConfig, key: str = "logger.mlflow") -> str:
    """Create the run MLFlowLogger would create on first use (same experiment, name and tags) and
    return its id."""
    from mlflow.tracking import MlflowClient

    uri = node.get("tracking_uri")
    name = node.get("experiment_name") or "lightning_logs"
    try:
        client = MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name(name)
        experiment_id = (experiment.experiment_id if experiment is not None
                         else client.create_experiment(name, artifact_location=node.get("artifact_location")))
        tags = dict(node.get("tags") or {})
        return client.create_run(experiment_id, run_name=node.get("run_name"), tags=tags).info.run_id
    except Exception as err:  # an unreachable server, a store that cannot be written
        raise UserError(f"{key}.tracking_uri={uri}: cannot create an MLflow run there "
                        f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                        "give a tracking_uri this machine can write") from None


def tensorboard_version(node: DictConfig) -> str | int:
    """The version folder TensorBoardLogger would pick: as configured, else the next free
    `version_<n>` under save_dir/name (recorded, so that a resumed run picks the same one)."""
    version = node.get("version")
    if version is not None:
        return version
    folder = Path(str(node.save_dir)) / str(node.get("name", "lightning_logs"))
    taken = [int(p.name.split("_", 1)[1]) for p in folder.glob("version_*") if p.name.split("_", 1)[1].isdigit()]
    return max(taken, default=-1) + 1


def identity(node: DictConfig) -> dict | None:
    """What names a logger's curve, as the node configures it (None for other loggers)."""
    kind = logger_kind(node)
    if kind == TENSORBOARD:
        return {"kind": kind, "save_dir": str(node.save_dir), "name": node.get("name", "lightning_logs"),
                "version": tensorboard_version(node)}
    if kind == MLFLOW:
        return {"kind": kind, "tracking_uri": node.get("tracking_uri"), "run_id": node.get("run_id")}
    if kind == WANDB:
        return {"kind": kind, "save_dir": str(node.save_dir), "id": node.get("id") or node.get("version")}
    return None


def give_identity(node: DictConfig, ids: dict) -> None:
    """Set a logger node's options so it writes to the curve `ids` names."""
    with open_dict(node):
        if ids["kind"] == TENSORBOARD:
            node.save_dir, node.name, node.version = ids["save_dir"], ids["name"], ids["version"]
        elif ids["kind"] == MLFLOW:
            node.run_id = ids["run_id"]
        elif ids["kind"] == WANDB:
            node.save_dir, node.id = ids["save_dir"], ids["id"]


def prepare_loggers(cfg: DictConfig, previous: dict | None = None, checkpoint_step: int | None = None) -> dict:
    """Fix each logger's identity in `cfg.logger` and return them for the run record: those of
    `previous` (the loggers of the run this one continues) where it names one for the same logger,
    else new ones."""
    recorded = {}
    previous = previous or {}
    for name, node in named_configs(cfg.get("logger")).items():
        ids = identity(node)
        if ids is None:
            continue
        earlier = previous.get(name)
        if earlier and earlier.get("kind") == ids["kind"] and (ids["kind"] != MLFLOW or earlier.get("run_id")):
            ids = earlier
            if ids["kind"] == TENSORBOARD and checkpoint_step is not None:
                with open_dict(node):
                    node.purge_step = int(checkpoint_step)
        elif ids["kind"] == MLFLOW and not ids["run_id"]:
            ids = ids | {"run_id": create_mlflow_run(node, f"logger.{name}")}
        elif ids["kind"] == WANDB and not ids["id"]:
            ids = ids | {"id": new_wandb_id()}
        give_identity(node, ids)
        recorded[name] = ids
    return recorded


def continued_loggers(cfg: DictConfig, resumed: dict, output_dir: Path) -> tuple[dict | None, int | None]:
    """The loggers of the run this one continues and the step of the checkpoint it starts from:
    the unfinished run it resumes (hylab/resume.py), or the unfinished run of this same folder,
    which SLURM reruns after a requeue (Lightning then resumes from `hpc_ckpt_<n>.ckpt` there)."""
    from hylab.checkpoint_peek import checkpoint_global_step
    from hylab.records import read_run_record
    from hylab.resume import UNFINISHED

    if resumed.get("resumed_from"):
        run_dir, checkpoint = Path(resumed["resumed_from"]), Path(resumed["resumed_checkpoint"])
    elif cfg.get("resume", True) and (output_dir / "metrics.json").is_file():
        run_dir, checkpoint = output_dir, newest_hpc_checkpoint(output_dir)
    else:
        return None, None
    try:
        previous = read_run_record(run_dir)
    except (OSError, ValueError):
        return None, None
    if run_dir == output_dir and previous.get("status") not in UNFINISHED:
        return None, None
    step = checkpoint_global_step(checkpoint) if checkpoint is not None else None
    return previous.get("loggers"), step


def newest_hpc_checkpoint(run_dir: Path) -> Path | None:
    """Lightning's SLURM checkpoint with the highest number (the one it resumes from)."""
    numbered = {int(p.stem.rsplit("_", 1)[-1]): p for p in run_dir.glob("hpc_ckpt_*.ckpt") if p.stem.rsplit("_", 1)[-1].isdigit()}
    return numbered[max(numbered)] if numbered else None
