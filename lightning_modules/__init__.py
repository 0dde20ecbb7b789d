"""One LightningModule per model family, plus shared optimizer/scheduler wiring (optim.py)."""
