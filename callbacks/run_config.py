"""Embed the run's resolved config in every checkpoint, so a checkpoint alone can rebuild its net."""

import lightning as L

CHECKPOINT_KEY = "hylab"


class EmbedRunConfig(L.Callback):
    """Adds {"config": <resolved config as plain dicts>, "run_dir": ..., "provenance": ...} under
    checkpoint["hylab"] (provenance: the code, command and machine that trained it).
    Plain containers only, so the checkpoint still loads with torch.load(weights_only=True)."""

    def __init__(self, config: dict, run_dir: str, provenance: dict | None = None):
        self.config = config
        self.run_dir = run_dir
        self.provenance = provenance or {}

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint[CHECKPOINT_KEY] = {"config": self.config, "run_dir": self.run_dir, "provenance": self.provenance}
