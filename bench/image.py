"""The image family's benches, one entry: `python -m bench.image <bench> [its arguments]`.

    uv run python -m bench.image distill [--subset 200 --epochs 1 ...]   # DeiT students with / without a teacher (bench/distill.py)
    uv run python -m bench.image deit [--device cuda --precision bf16 --compile]   # DeiT train-step images/s (bench/deit.py)
    uv run python -m bench.image layout                                  # SpeedNet images/s by memory layout and dtype (bench/speed_layout.py)
    uv run python -m bench.image <bench> --help

Each bench stays in its own module (and runs alone as `python -m bench.<module>` too); this file
only names them for the family, as bench/<family>.py does for the others.
"""

import importlib
import sys

BENCHES = {"distill": "bench.distill", "deit": "bench.deit", "layout": "bench.speed_layout"}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in BENCHES:
        names = " | ".join(BENCHES)
        print(f"usage: python -m bench.image {{{names}}} [arguments]; `--help` after a name lists its arguments", file=sys.stderr)
        raise SystemExit(2)
    module = importlib.import_module(BENCHES[argv[0]])
    sys.argv = [f"bench.image {argv[0]}", *argv[1:]]  # the bench's argparse reads its own arguments
    module.main()


if __name__ == "__main__":
    main()
