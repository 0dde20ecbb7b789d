"""A fine-tuning sweep as one table, mean ± std per group, and how many base models it used.

    python -m lightning_modules.har.aggregate logs/har_finetune/multiruns/<sweep> --by finetune.mode

The table is hylab.aggregate's (same options, aggregate.csv / aggregate.md in the sweep
folder); the summary line adds the number of distinct base models the jobs started from, read
from the BASE_RECORD each fine-tuning job writes (lightning_modules/har/callbacks.py). Reads
files only: no torch.
"""

import json
import sys
from pathlib import Path

from hylab import aggregate

# A job that starts from a stored base model names it in this file of its run dir.
BASE_RECORD = "base_model.json"


def base_models(jobs: list[aggregate.Job]) -> set[str]:
    """Keys of the stored runs the jobs started from (a reused job: those of the run it reused)."""
    keys = set()
    for job in jobs:
        for folder in (job.folder, Path(job.record.get("reused_from") or job.folder)):
            if (folder / BASE_RECORD).is_file():
                keys.add(json.loads((folder / BASE_RECORD).read_text())["key"])
                break
    return keys


def main(argv: list[str] | None = None) -> int:
    return aggregate.main(argv, prog="python -m lightning_modules.har.aggregate",
                          notes=lambda jobs: f"{len(base_models(jobs))} distinct base models")


if __name__ == "__main__":
    sys.exit(main())
