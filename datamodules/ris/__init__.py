"""RIS near-field localization, data side (guide: docs/ris.md).

physics.py    geometry, near-field steering, BS-RIS channel, codes, snapshots, the classical inverse
scenes.py     random scenes determined by (seed, split, index), the network batch
datamodule.py RISDataModule: scenes simulated on the fly or read from a sharded cache
settings.py   typed settings of the datamodule and the geometry (torch-free)
"""
