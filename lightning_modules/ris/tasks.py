"""task=ris_classical: evaluate a RIS model that has no learned part (the classical MUSIC
baseline, model.net=null) through the same datamodule, module, metrics and loggers as a trained
one: validation then test, no checkpoint, no training."""

from omegaconf import DictConfig

from hylab.errors import UserError
from hylab.tasks import TaskResult


def classical(cfg: DictConfig) -> TaskResult:
    from hylab.trainer_tasks import built

    with built(cfg) as run:
        trainable = sum(p.numel() for p in run.model.parameters() if p.requires_grad)
        if trainable:
            raise UserError(f"task=ris_classical evaluates a model with no learned part, but this one has {trainable} "
                            "trainable parameters: set model/net=null, or train it with task=fit")
        run.trainer.validate(run.model, datamodule=run.datamodule)
        metrics = dict(run.trainer.callback_metrics)
        run.trainer.test(run.model, datamodule=run.datamodule)
        return TaskResult(metrics=metrics | dict(run.trainer.callback_metrics))
