"""Read a run's curves back the way each logger's own tools do: {metric name: [(step, value), ...]}.

TensorBoard through its `EventAccumulator` (which applies the `purge_step` of a resumed writer),
MLflow through `MlflowClient.get_metric_history`, W&B from the offline run folders' `.wandb` files
(every folder of the run id, in the order they were written, as `wandb sync` uploads them;
wandb ships no Python reader of them, hylab/wandb_offline.py reads the format)."""

from pathlib import Path

from hylab.wandb_offline import offline_folders, wandb_curves  # noqa: F401  (W&B's reader, with the others)

def tensorboard_curves(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    accumulator = EventAccumulator(str(log_dir), size_guidance={SCALARS: 0}).Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


def mlflow_curves(tracking_uri: str, run_id: str) -> dict[str, list[tuple[int, float]]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    names = client.get_run(run_id).data.metrics
    return {name: [(m.step, m.value) for m in client.get_metric_history(run_id, name)] for name in names}
