"""Figures from a run: saved as PNG under <run dir>/plots and sent to every logger that takes images."""

from pathlib import Path


def log_figure(trainer, tag: str, figure) -> Path:
    """Save `figure` (matplotlib) as <run dir>/plots/<tag>.png and log it through the active loggers."""
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


def confusion_matrix_figure(matrix, class_names: list[str]):
    """A confusion-matrix heat map with counts; rows are true classes, columns predictions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    size = max(4.0, 0.5 * len(class_names) + 2)
    figure, axes = plt.subplots(figsize=(size, size))
    axes.imshow(matrix, cmap="Blues")
    ticks = range(len(class_names))
    axes.set_xticks(ticks, class_names, rotation=45, ha="right")
    axes.set_yticks(ticks, class_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    peak = matrix.max() if matrix.size else 0
    for (row, col), count in np.ndenumerate(matrix):
        axes.text(col, row, int(count), ha="center", va="center", fontsize=7, color="white" if count > peak / 2 else "black")
    figure.tight_layout()
    return figure
