"""Lightning's ThroughputMonitor counting tokens: logs train/device/items_per_sec (tokens/s),
flops_per_sec from the module's `flops_per_batch`, and MFU where Lightning knows the device's peak."""

from lightning.pytorch.callbacks import ThroughputMonitor


def batch_rows(batch) -> int:
    return batch[0].size(0)


def batch_tokens(batch) -> int:
    return batch[0].numel()


def token_throughput_monitor(window_size: int = 20) -> ThroughputMonitor:
    return ThroughputMonitor(batch_size_fn=batch_rows, length_fn=batch_tokens, window_size=window_size)
