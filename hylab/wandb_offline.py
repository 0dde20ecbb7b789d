"""W&B's offline run folders, read back: the history rows a run wrote, with the step of each.

wandb ships no Python reader of its `.wandb` files (its Go core reads them), so this reads the
format: a LevelDB log (32 KiB blocks of records with a 7-byte header: CRC, length, type
FULL/FIRST/MIDDLE/LAST) after a 7-byte file header (`:W&B`, magic, version); each record is one
`wandb.proto.wandb_internal_pb2.Record`, and a history record holds the logged values as JSON.
Lightning's WandbLogger logs the step as `trainer/global_step` in each row.
"""

import json
import struct
from pathlib import Path

WANDB_FILE_HEADER = 7
BLOCK = 32 * 1024
RECORD_HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4
WANDB_STEP = "trainer/global_step"


def wandb_records(path: Path):
    """The protobuf records of one `.wandb` file, in order."""
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a .wandb file")
    position, pending = WANDB_FILE_HEADER, b""
    while position + RECORD_HEADER <= len(data):
        room = BLOCK - position % BLOCK
        if room < RECORD_HEADER:  # the block's tail is padding
            position += room
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + RECORD_HEADER])
        if length == 0 and kind == 0:  # zero padding at the end of a block
            position += room
            continue
        if position + RECORD_HEADER + length > len(data):
            return  # the writer was killed mid-record
        payload = data[position + RECORD_HEADER:position + RECORD_HEADER + length]
        position += RECORD_HEADER + length
        pending = payload if kind in (FULL, FIRST) else pending + payload
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def wandb_history(run_folder: Path) -> list[dict]:
    """The history rows of one offline run folder (`offline-run-<time>-<id>`)."""
    rows = []
    for record in (r for path in Path(run_folder).glob("*.wandb") for r in wandb_records(path)):
        if record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item})
    return rows


def wandb_curves(run_folders: list[Path]) -> dict[str, list[tuple[int, float]]]:
    """{metric name: [(trainer/global_step, value), ...]} over the folders of one run, in order."""
    curves: dict[str, list[tuple[int, float]]] = {}
    for folder in sorted(run_folders, key=lambda p: p.name):  # offline-run-<YYYYmmdd_HHMMSS>-<id>: by time
        for row in wandb_history(folder):
            if WANDB_STEP not in row:
                continue
            for name, value in row.items():
                if not name.startswith("_") and name != WANDB_STEP and isinstance(value, (int, float)):
                    curves.setdefault(name, []).append((int(row[WANDB_STEP]), float(value)))
    return curves


def offline_folders(save_dir: Path, run_id: str) -> list[Path]:
    """The offline folders of run `run_id` under a WandbLogger's save_dir, oldest first."""
    return sorted(Path(save_dir).glob(f"wandb/offline-run-*-{run_id}"), key=lambda p: p.name)
