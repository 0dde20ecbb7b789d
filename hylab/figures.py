"""Figures from a run: saved as PNG under <run dir>/plots and sent to every logger that takes images."""

from pathlib import Path


def log_figure(trainer, tag: str, figure) -> Path:
    """Save `figure` (matplotlib, e.g. from torchmetrics' `.plot()`) as <run dir>/plots/<tag>.png and log it through the active loggers."""
    import matplotlib.pyplot as plt

    path = Path(trainer.default_root_dir) / "plots" / (tag.replace("/", "_") + ".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    for logger in trainer.loggers:
        kind = type(logger).__name__
        if kind == "TensorBoardLogger":
            logger.experiment.add_figure(tag, figure, global_step=trainer.global_step)
        elif kind == "MLFlowLogger":
            logger.experiment.log_figure(logger.run_id, figure, f"{tag}.png")
        elif kind == "WandbLogger":
            logger.log_image(key=tag, images=[str(path)])
    plt.close(figure)
    return path

