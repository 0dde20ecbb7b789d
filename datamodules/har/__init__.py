"""Wearable activity recognition data: seglearn's watch recordings as windows, split by participant.

- datamodule.py: HarWindowsDataModule (one leave-one-participant-out fold).
- data.py: reading the recordings, windows, participant splits (numpy only).
- augment.py: jitter, scaling, time warp on batches.
- settings.py: the DataModule's schema and the fine-tuning modes.
"""
