"""`python -m hylab.store_cli list` and `python -m hylab.store_cli get <experiment> [overrides...]`."""

import argparse
import json
import logging
import sys
from pathlib import Path

from hylab.errors import UserError
from hylab.store import ENTRY_FILE, RunStore, compose_for


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hylab.store_cli", description="The run store: list entries, or get (train once) a run.")
    parser.add_argument("--log-dir", default=None, help="paths.log_dir of the runs (default: the project's logs/)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="one line per stored run")
    get = commands.add_parser("get", help="print the stored run of an experiment + overrides, training it first if absent")
    get.add_argument("experiment")
    get.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    try:
        # `list` reads store.dir from the default config; `get` from the experiment's own
        listing = args.command == "list"
        store_dir = compose_for(None if listing else args.experiment, [] if listing else args.overrides, args.log_dir).store.dir
        store = RunStore(store_dir)
        if listing:
            for folder in sorted(Path(store_dir).glob(f"*/{ENTRY_FILE}")):
                entry = json.loads(folder.read_text())
                print(f"{entry['key']}  {entry.get('experiment')}  {' '.join(entry.get('overrides') or [])}  {entry.get('run_dir')}")
            return 0
        entry = store.get_or_train(args.experiment, args.overrides, args.log_dir)
        print(json.dumps({"key": entry.key, "checkpoint": str(entry.checkpoint), "run_dir": entry.run_dir}))
        return 0
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
