"""Run an untrusted Python program (a model's HumanEval completion plus the problem's tests) in a
child process with limits: CPU seconds, address space, file size, no child processes, wall time,
captured output; an empty temporary working folder, an isolated interpreter (`-I`) and a bare
environment. This is damage control for small programs a language model wrote, not a security
boundary (no network or file-system isolation).
"""

import os
import resource
import subprocess
import sys
import tempfile
from dataclasses import dataclass


@dataclass
class Outcome:
    passed: bool
    status: str  # "passed", "failed", "timeout"
    output: str


def _limits(cpu_seconds: int, memory_mb: int, file_mb: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds))
        memory = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_mb * 1024 * 1024,) * 2)
        resource.setrlimit(resource.RLIMIT_NPROC, (0, 0)) if os.getuid() != 0 else None
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        os.setsid()

    return apply


def run_python(program: str, wall_seconds: float = 10.0, cpu_seconds: int = 5, memory_mb: int = 1024,
               file_mb: int = 1, max_output: int = 4000) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="hylab-exec-") as folder:
        path = os.path.join(folder, "program.py")
        with open(path, "w") as handle:
            handle.write(program)
        try:
            done = subprocess.run(
                [sys.executable, "-I", path], cwd=folder, env={"PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0"},
                stdin=subprocess.DEVNULL, capture_output=True, timeout=wall_seconds,
                preexec_fn=_limits(cpu_seconds, memory_mb, file_mb),
            )
        except subprocess.TimeoutExpired as err:
            output = (err.stdout or b"") + (err.stderr or b"")
            return Outcome(False, "timeout", output[-max_output:].decode(errors="replace"))
    output = (done.stdout + done.stderr)[-max_output:].decode(errors="replace")
    return Outcome(done.returncode == 0, "passed" if done.returncode == 0 else "failed", output)
