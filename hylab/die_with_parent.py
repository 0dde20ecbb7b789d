"""Run a command that dies with the process that started it (Linux).

    python hylab/die_with_parent.py <parent pid> <program> [args...]

sets the parent-death signal (prctl PR_SET_PDEATHSIG, SIGTERM) in this process and then execs the
program: the setting survives exec, so the program gets SIGTERM when the thread that started it
exits, whatever killed it (SIGKILL included). A parent that already died before the signal was
armed is caught by comparing the parent pid. Elsewhere the program simply runs.
"""

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def main() -> None:
    parent, program = int(sys.argv[1]), sys.argv[2:]
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:
            sys.exit(128 + signal.SIGTERM)
    os.execv(program[0], program)


if __name__ == "__main__":
    main()
