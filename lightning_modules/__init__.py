"""One LightningModule per model family, plus shared optimizer/scheduler wiring (optim.py) and the
best-so-far tracker every family logs `val/<name>_best` with (best_so_far.py)."""
