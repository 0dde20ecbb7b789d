"""One LightningDataModule per data family, plus the readers and simulators behind them."""
