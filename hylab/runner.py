"""Run one composed config: check, print, seed, dispatch the task, record what came out.

`run(cfg)` is the whole life of a run, callable in-process (tests, benches); `run_hydra_job`
wraps it for run.py inside a Hydra job.
"""

import logging
import re
import sys
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from hylab.checks import check_config
from hylab.ddp import is_rank_zero_process
from hylab.errors import RunNotStarted, UserError
from hylab.logger_ids import continued_loggers, prepare_loggers
from hylab.provenance import gpus, provenance
from hylab.records import now_iso, plain_metrics, write_run_record
from hylab.redact import redact_hydra_files
from hylab.resume import mark_resumed, resume_unfinished, this_process
from hylab.store import RunStore, training_config, training_hash

log = logging.getLogger("hylab")

SIGNAL_EXIT_CODE = 143  # 128 + SIGTERM, what shells and schedulers expect of a terminated job


# Lightning's lines that say nothing about the run: an advert for its cloud logger, and the note
# that our own model summary callback (callbacks/model_summary.py) replaces its default one.
UNINFORMATIVE = ("💡 Tip:", "Trainer already configured with model summary callbacks")
# Lightning 2.6's own pytree helper builds torch's deprecated `LeafSpec` on every fit; not ours to fix.
DEPRECATED_INSIDE_LIGHTNING = r"`isinstance\(treespec, LeafSpec\)` is deprecated"


def drop_uninformative(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(UNINFORMATIVE)


def route_lightning_logs_through_root() -> None:
    """`import lightning` adds its own console handler and still propagates to the root logger,
    which Hydra has set up (console + run log file): every line would print twice. Lightning's
    advert and a deprecation inside Lightning are left out of every run's output."""
    import warnings

    if logging.getLogger().hasHandlers():
        lightning_logger = logging.getLogger("lightning")
        for handler in list(lightning_logger.handlers):
            lightning_logger.removeHandler(handler)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        if drop_uninformative not in logging.getLogger(name).filters:
            logging.getLogger(name).addFilter(drop_uninformative)
    warnings.filterwarnings("ignore", message=DEPRECATED_INSIDE_LIGHTNING, category=FutureWarning)


def optimized_value(cfg: DictConfig, metrics: dict) -> float | None:
    """The value a sweeper optimizes; None (with a warning) when the run did not log it."""
    name = cfg.get("optimized_metric")
    if not name:
        return None
    if name not in metrics:
        if cfg.task == "fit":  # evaluation and family tasks log other things
            log.warning(f"optimized_metric={name!r} was not logged by this run; logged: {sorted(metrics)}")
        return None
    value = metrics[name]
    return float(value) if isinstance(value, (int, float)) else None


def _identity(cfg: DictConfig, output_dir: Path) -> dict:
    from hydra.core.hydra_config import HydraConfig

    choices, overrides = {}, []
    if HydraConfig.initialized():
        choices = OmegaConf.to_container(HydraConfig.get().runtime.choices)
        overrides = list(HydraConfig.get().overrides.task)
    return {
        "run_id": output_dir.name,
        "run_dir": str(output_dir),
        "task": cfg.task,
        "task_name": cfg.get("task_name"),
        "experiment": choices.get("experiment"),
        "overrides": overrides,
        "seed": cfg.get("seed"),
    }


def reused_run(cfg: DictConfig, key: str | None):
    """With store.reuse, the stored result of this exact run (same training hash), if any."""
    from hylab.tasks import TaskResult

    if not key or not store_reuse(cfg):
        return None
    store = RunStore(cfg.store.dir)
    entry = store.find(key)
    if entry is None:
        return None
    name = cfg.get("optimized_metric")
    if name and not isinstance((entry.record.get("metrics") or {}).get(name), (int, float)):
        # written before records were checked for it: a sweep cannot use it, so train it again
        store.move_aside(key, f"no value for optimized_metric={name!r}")
        return None
    log.info(f"reusing stored run {entry.record.get('run_id')} (key {key}) from {entry.run_dir}: not training again")
    return TaskResult(
        metrics=entry.record.get("metrics") or {},
        checkpoints={"best": str(entry.checkpoint), "last": str(entry.checkpoint)},
        extra={"reused_from": entry.run_dir},
    )


def register_in_store(cfg: DictConfig, record: dict) -> None:
    """Index a completed fit run in the run store, so asking for the same config reuses it.

    A record without the value of its optimized metric is not registered (a sweep reusing it
    would have nothing to optimize); a store that cannot be written (read-only, full) is a
    warning: the run itself completed, and its results are in its run dir."""
    from filelock import Timeout

    store_cfg = cfg.get("store")
    checkpoint = (record.get("checkpoints") or {}).get("best") or (record.get("checkpoints") or {}).get("last")
    if not store_cfg or not store_cfg.get("register_runs") or not checkpoint or cfg.trainer.get("fast_dev_run"):
        return
    if str(record.get("stopped", "")).startswith("pruned"):
        return  # cut short by a search: not what this config trains to
    metric = record.get("optimized_metric") or {}
    if metric.get("name") and metric.get("value") is None:
        log.warning(f"not registered in the run store: optimized_metric={metric['name']!r} has no value in this run")
        return
    store = RunStore(store_cfg.dir)
    key = record["config_hash"]
    try:
        with store.lock(key, timeout=30):
            store.register(key, Path(checkpoint), record, training_config(cfg))
    except Timeout:
        log.warning(f"run store key {key} is locked by another process; this run was not registered")
    except OSError as err:
        log.warning(f"run store {store.root} cannot be written ({err.strerror or err}); this run completed but was not registered")


def store_reuse(cfg: DictConfig) -> bool:
    """store.reuse: true, false, or auto (reuse in sweeps, so a re-run sweep skips finished jobs)."""
    reuse = (cfg.get("store") or {}).get("reuse", False)
    if reuse == "auto":
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    return bool(reuse)


def failure_status(err: BaseException) -> str:
    """"interrupted" for a signal or Ctrl-C (the run can continue), "failed" for anything else."""
    stopped = isinstance(err, KeyboardInterrupt) or type(err).__name__ == "SIGTERMException"
    return "interrupted" if stopped else "failed"


def run(cfg: DictConfig) -> float | None:
    """Run the task named by cfg.task and return cfg.optimized_metric's value (for sweepers)."""
    check_config(cfg)  # before torch is imported: bad values stop here in one line
    output_dir = Path(cfg.paths.output_dir)
    rank_zero = is_rank_zero_process()
    record = _identity(cfg, output_dir) | {"status": "running", "started_at": now_iso(), "process": this_process()}
    if cfg.task == "fit":
        record["config_hash"] = training_hash(cfg)
        record |= resume_unfinished(cfg, record["config_hash"], output_dir)
        if rank_zero:  # the other ranks' loggers write nothing
            record["loggers"] = prepare_loggers(cfg, *continued_loggers(cfg, record, output_dir))
    if rank_zero:
        redact_hydra_files(output_dir)
        record["provenance"] = provenance(output_dir)
        write_run_record(output_dir, record)  # a run killed outright still leaves its record
    if cfg.get("keep_freed_memory"):
        from hylab.allocator import keep_freed_memory

        keep_freed_memory()
    import lightning as L
    import torch

    from hylab.printing import print_config_tree
    from hylab.tasks import resolve_task

    route_lightning_logs_through_root()
    started = time.perf_counter()
    try:
        if rank_zero:
            print_config_tree(cfg, save_to=output_dir)
        if cfg.get("float32_matmul_precision") and torch.cuda.is_available():
            torch.set_float32_matmul_precision(cfg.float32_matmul_precision)
        if cfg.get("seed") is not None:
            L.seed_everything(cfg.seed, workers=True)
        result = reused_run(cfg, record.get("config_hash")) or resolve_task(cfg.task, cfg.tasks)(cfg)
        metrics = plain_metrics(result.metrics)
        value = optimized_value(cfg, metrics)
        record |= {
            "status": "completed",
            "optimized_metric": {"name": cfg.get("optimized_metric"), "value": value},
            "metrics": metrics,
            "checkpoints": result.checkpoints,
            **result.extra,
        }
        if rank_zero and cfg.task == "fit":
            register_in_store(cfg, record)
            if record.get("resumed_from"):
                mark_resumed(record["resumed_from"], output_dir)
        return value
    except BaseException as err:
        record |= {"status": failure_status(err), "error": f"{type(err).__name__}: {err}"}
        log.error(f"run {record['status']} ({type(err).__name__}: {err}); run dir: {output_dir}")
        raise
    finally:
        record |= {"finished_at": now_iso(), "wall_time_s": round(time.perf_counter() - started, 3)}
        if rank_zero:
            if "provenance" in record:  # the GPUs as the run saw them (torch was not loaded when the record began)
                record["provenance"]["machine"]["gpus"] = gpus()
            path = write_run_record(output_dir, record)
            log.info(f"run dir: {output_dir} (metrics: {path.name})")


# What Lightning's EarlyStopping and ModelCheckpoint raise when `monitor` names a metric the
# module never logs: known only once validation has run, so the run has started by then.
UNLOGGED_MONITOR = (
    re.compile(r"conditioned on metric `(?P<name>[^`]+)` which is not available.*following: (?P<logged>.*)$", re.S),
    re.compile(r"monitor='(?P<name>[^']+)'\)` could not find the monitored key in the returned metrics: \[(?P<logged>[^\]]*)\]", re.S),
)


def unlogged_monitor(err: BaseException) -> str | None:
    """One line for a `monitor` that the run does not log, naming the metrics it does log."""
    for pattern in UNLOGGED_MONITOR:
        found = pattern.search(str(err))
        if found:
            logged = sorted({name.strip("`' ") for name in found["logged"].split(",")} - {""})
            validation = [name for name in logged if name.startswith("val/")] or logged
            return f"monitor={found['name']} is not a metric this run logs; set monitor= to one of: {', '.join(validation)}"
    return None


HYDRA_STARTUP_FILES = {".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml"}


def discard_unstarted_run_dir(run_dir: Path, log_dir: Path, built: bool = False) -> None:
    """Remove the folder Hydra made for a run that stopped at its checks: it holds only Hydra's
    config copies and the log, nothing of value. Folders above it are removed only when empty,
    up to (not including) the log dir. Anything else in it keeps the whole folder, unless
    `built` (a RunNotStarted: stopped before its first training step, so what the run wrote
    while being built, its record and logger files, holds nothing of value either)."""
    import shutil

    files = {str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file()}
    if not run_dir.is_dir() or not (built or files <= HYDRA_STARTUP_FILES | {p.name for p in run_dir.glob("*.log")}):
        return
    shutil.rmtree(run_dir, ignore_errors=True)  # under DDP every rank may remove it
    for parent in run_dir.parents:
        if parent == log_dir or log_dir not in parent.parents:
            break
        try:
            parent.rmdir()  # only an empty folder; another run's folder keeps it
        except OSError:
            break


def run_hydra_job(cfg: DictConfig) -> float | None:
    """run() inside a Hydra job: DDP-safe run dir; a UserError ends a single run with one line."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from hylab.ddp import pin_run_dir_for_subprocesses

    pin_run_dir_for_subprocesses()
    sweeping = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        value = run(cfg)
        if sweeping and cfg.get("optimized_metric") and value is None:
            raise UserError(f"optimized_metric={cfg.optimized_metric!r} has no value in this run, so a sweep cannot use it")
        return value
    except UserError as err:
        if sweeping:
            raise  # the sweeper records this job as failed and goes on
        discard_unstarted_run_dir(Path(cfg.paths.output_dir), Path(cfg.paths.log_dir), built=isinstance(err, RunNotStarted))
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except BaseException as err:
        if failure_status(err) != "interrupted":
            unlogged = unlogged_monitor(err)
            if unlogged and not sweeping:
                print(f"error: {unlogged}", file=sys.stderr)
                raise SystemExit(2) from None
            raise
        print("stopped by a signal after saving checkpoints/last.ckpt; run the same command again to continue", file=sys.stderr)
        raise SystemExit(SIGNAL_EXIT_CODE) from None
