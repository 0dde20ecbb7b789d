"""Lightning's model summary without its FLOPs column: Lightning counts FLOPs only for a model with
an `example_input_array`, so every run printed "FLOPs 0" per layer and "Total FLOPs: 0"."""

import logging

from lightning.pytorch.callbacks import ModelSummary
from lightning.pytorch.utilities.model_summary import get_human_readable_count
from rich.console import Console
from rich.table import Table

log = logging.getLogger("hylab")
LEFT_OUT = {"FLOPs"}


class ModelSummaryWithoutFlops(ModelSummary):
    """`ModelSummary` with `summarize` (its documented override point) printing the layer table
    and the parameter counts, FLOPs left out."""

    @staticmethod
    def summarize(summary_data, total_parameters, trainable_parameters, model_size, total_training_modes, total_flops=0, **kwargs) -> None:
        columns = [(name, values) for name, values in summary_data if name not in LEFT_OUT]
        table = Table(header_style="bold magenta")
        for name, _ in columns:
            table.add_column(name, justify="right" if name in (" ", "Params") else "left")
        for row in zip(*(values for _, values in columns)):
            table.add_row(*row)
        console = Console()
        console.print(table)
        console.print(
            f"Trainable params: {get_human_readable_count(trainable_parameters)}   "
            f"Non-trainable params: {get_human_readable_count(total_parameters - trainable_parameters)}   "
            f"Total params: {get_human_readable_count(total_parameters)}   "
            f"Size: {model_size:,.3f} MB   "
            f"Modules: {total_training_modes['train']} in train mode, {total_training_modes['eval']} in eval mode",
            highlight=False,
        )
