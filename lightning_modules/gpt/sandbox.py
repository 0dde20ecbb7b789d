"""Run untrusted Python (a model's tool call, a HumanEval completion) in a bubblewrap sandbox.

    result = run_python("print(6 * 7)", cpu_s=2, memory_mb=256, wall_s=5, max_output_bytes=10_000)
    result.status   # finished | timeout | memory | crash | output_limit | unavailable
    result.stdout   # "42\n"

The isolation is Debian's bubblewrap (`bwrap`), an established tool, not code of ours. Each call
gets a sandbox of its own that ends with the call:

- namespaces of its own (`--unshare-all --unshare-user`: user, mount, network, PID, IPC, UTS,
  cgroup): no network but a loopback of its own, no other process visible or reachable;
- a filesystem of read-only binds of only what Debian's interpreter needs (/usr/bin/python3,
  /usr/lib, /usr/lib64 and the /lib, /lib64 links): not the project, /etc, /root or any venv;
- private tmpfs mounts, sized: /tmp (its working directory, HOME and TMPDIR; `code` is main.py
  there, `files` beside it) and /dev/shm, which vanish with the call;
- uid and gid 65534 inside, no capabilities (`--cap-drop ALL`), a new session (no terminal to
  inject into), `--die-with-parent`. As root, bwrap itself starts as user 65534, so the sandbox is
  no one outside either: the kernel exempts root's processes from RLIMIT_NPROC;
- kernel resource limits, set by a short bootstrap inside before the code runs: CPU seconds
  (RLIMIT_CPU), address space (RLIMIT_AS = memory_mb), processes (RLIMIT_NPROC), size of any file
  it writes (RLIMIT_FSIZE), open files, no core dumps.

The parent enforces the wall-clock limit and the output limit (stdout + stderr together) and
kills bwrap when one is hit; its PID namespace, every process in it (a `setsid` daemon too), and
its tmpfs mounts go with it. It fails closed: without bwrap or /usr/bin/python3, or where the
namespaces cannot be set up (user namespaces switched off), the status is `unavailable` with one
line saying why and what to install, and the code never runs, neither as the caller nor as root.
"""

import functools
import json
import logging
import os
import selectors
import shutil
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import PurePosixPath

log = logging.getLogger("hylab")
STATUSES = ("finished", "timeout", "memory", "crash", "output_limit", "unavailable")
PYTHON = "/usr/bin/python3"  # Debian's interpreter: its standard library is under /usr/lib
NOBODY = 65534  # the sandbox's uid and gid inside; as root, bwrap's own outside
SHM_MB = 4  # /dev/shm: enough for multiprocessing's semaphores, too small to pin memory
INSTALL = "apt-get install bubblewrap"

# Runs inside the sandbox before the code: the limits, then the code as __main__.
BOOTSTRAP = r"""
import json, os, resource, sys
cfg = json.loads(sys.argv[1])
for name, value in cfg["limits"].items():
    resource.setrlimit(getattr(resource, name), (value, value) if name != "RLIMIT_CPU" else (value, value + 1))
os.write(cfg["ready_fd"], b"1")
os.closerange(3, 1024)
source = open("main.py").read()
del cfg, json, resource, name, value
sys.argv = ["main.py"]
exec(compile(source, "main.py", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
"""


@dataclass
class SandboxResult:
    status: str  # one of STATUSES
    stdout: str
    stderr: str
    returncode: int | None  # negative: killed by that signal
    wall_s: float
    error: str = ""  # one line: what went wrong (the exception, the limit hit, why the sandbox is unavailable)

    @property
    def ok(self) -> bool:
        return self.status == "finished"

    def to_dict(self) -> dict:
        return asdict(self)

    def text(self, limit: int = 2000) -> str:
        """What a model sees as the tool's output: stdout, or the error line when the run failed."""
        out = self.stdout if self.ok else (self.stdout + (self.error or self.status)).strip()
        return out if len(out) <= limit else out[:limit] + "..."


@functools.cache
def _warn_once(reason: str) -> None:  # a server would otherwise log it at every tool call
    log.warning(f"the python tool is unavailable: {reason}")


def unavailable(reason: str) -> SandboxResult:
    _warn_once(reason)
    return SandboxResult("unavailable", "", "", None, 0.0, f"the python tool is unavailable: {reason}")


def missing_parts() -> str | None:
    """Why no sandbox can start here (one line), or None."""
    if shutil.which("bwrap") is None:
        return f"bubblewrap (bwrap) is not installed or not on PATH; install it: `{INSTALL}`"
    if not os.access(PYTHON, os.X_OK):
        return f"{PYTHON} (Debian's interpreter, the only one the sandbox binds) is missing; install it: `apt-get install python3`"
    return None


def bwrap_command(bwrap: str, tmp_mb: int, files: dict[str, int]) -> list[str]:
    """The bwrap call: the namespaces, the read-only binds, the tmpfs mounts, the files (name -> fd)."""
    command = [bwrap, "--unshare-all", "--unshare-user", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
               "--uid", str(NOBODY), "--gid", str(NOBODY),
               "--ro-bind", os.path.realpath(PYTHON), PYTHON, "--ro-bind", "/usr/lib", "/usr/lib"]
    if os.path.isdir("/usr/lib64"):
        command += ["--ro-bind", "/usr/lib64", "/usr/lib64", "--symlink", "usr/lib64", "/lib64"]
    command += ["--symlink", "usr/lib", "/lib", "--proc", "/proc", "--dev", "/dev",
                "--perms", "1777", "--size", str(SHM_MB << 20), "--tmpfs", "/dev/shm",
                "--perms", "1777", "--size", str(tmp_mb << 20), "--tmpfs", "/tmp", "--chdir", "/tmp"]
    for folder in sorted({str(parent) for name in files for parent in PurePosixPath(name).parents if str(parent) != "."}):
        command += ["--dir", f"/tmp/{folder}"]
    for name, fd in files.items():
        command += ["--file", str(fd), f"/tmp/{name}"]
    command += ["--clearenv"]
    for name, value in {"PATH": "/usr/bin", "HOME": "/tmp", "TMPDIR": "/tmp", "LANG": "C.UTF-8"}.items():
        command += ["--setenv", name, value]
    return command


def checked_name(name: str) -> str:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise ValueError(f"sandbox file {name!r} is outside the sandbox directory")
    return str(path)


def _memfd(name: str, text: str) -> int:
    fd = os.memfd_create(f"sandbox-{PurePosixPath(name).name}")
    os.write(fd, text.encode())
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def run_python(
    code: str,
    *,
    cpu_s: float = 2.0,
    memory_mb: int = 256,
    wall_s: float = 5.0,
    max_output_bytes: int = 64_000,
    max_processes: int = 16,
    max_file_mb: int = 16,
    max_open_files: int = 64,
    files: dict[str, str] | None = None,
) -> SandboxResult:
    """Run `code` as main.py in a fresh sandbox (with `files` written beside it) under the limits."""
    files = {checked_name(name): text for name, text in (files or {}).items()}
    reason = missing_parts()
    if reason:
        return unavailable(reason)
    limits = {
        "RLIMIT_CPU": max(1, int(round(cpu_s))),
        "RLIMIT_AS": int(memory_mb * 2**20),
        "RLIMIT_NPROC": max_processes,
        "RLIMIT_FSIZE": int(max_file_mb * 2**20),
        "RLIMIT_NOFILE": max_open_files,
        "RLIMIT_CORE": 0,
    }
    sources = {"main.py": code, **files}
    tmp_mb = int(max_file_mb) + sum(len(text.encode()) for text in sources.values()) // 2**20 + 1
    fds = {name: _memfd(name, text) for name, text in sources.items()}
    ready_read, ready_write = os.pipe()
    try:
        config = {"limits": limits, "ready_fd": ready_write}
        command = [*bwrap_command(shutil.which("bwrap"), tmp_mb, fds), PYTHON, "-I", "-B", "-c", BOOTSTRAP, json.dumps(config)]
        # As root, bwrap starts as no one: the sandbox is then unprivileged outside as well.
        as_nobody = dict(user=NOBODY, group=NOBODY, extra_groups=[]) if os.geteuid() == 0 else {}
        try:
            process = subprocess.Popen(
                command, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")}, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, pass_fds=(ready_write, *fds.values()),
                **as_nobody,
            )
        except OSError as err:  # e.g. a bwrap that user 65534 may not run
            os.close(ready_read)
            return unavailable(f"{command[0]} could not be started ({err}); `{INSTALL}` installs it for every user")
    finally:
        os.close(ready_write)
        for fd in fds.values():
            os.close(fd)
    try:
        return _collect(process, ready_read, wall_s, max_output_bytes, cpu_s)
    finally:
        os.close(ready_read)


def _collect(process: subprocess.Popen, ready_read: int, wall_s: float, max_output_bytes: int, cpu_s: float) -> SandboxResult:
    started = time.monotonic()
    buffers = {process.stdout: bytearray(), process.stderr: bytearray()}
    selector = selectors.DefaultSelector()
    for stream in buffers:
        selector.register(stream, selectors.EVENT_READ)
    limit_hit = None
    try:
        while selector.get_map():
            left = wall_s - (time.monotonic() - started)
            if left <= 0:
                limit_hit = "timeout"
                break
            for key, _ in selector.select(timeout=min(left, 0.5)):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    selector.unregister(key.fileobj)
                    continue
                buffers[key.fileobj].extend(chunk)
                if sum(len(b) for b in buffers.values()) > max_output_bytes:
                    limit_hit = "output_limit"
                    break
            if limit_hit:
                break
        if limit_hit is None:
            try:
                process.wait(timeout=max(0.1, wall_s - (time.monotonic() - started)))
            except subprocess.TimeoutExpired:
                limit_hit = "timeout"
    finally:
        _kill(process)
        selector.close()
        for stream in buffers:
            stream.close()
    wall = time.monotonic() - started
    stdout, stderr = (bytes(b).decode("utf-8", errors="replace") for b in buffers.values())
    os.set_blocking(ready_read, False)
    try:
        ready = os.read(ready_read, 1) == b"1"
    except BlockingIOError:
        ready = False
    if not ready and limit_hit is None:  # bwrap stopped before the code started: no sandbox, no run
        said = next((line for line in reversed(stderr.strip().splitlines()) if line.strip()), f"exit code {process.returncode}")
        return unavailable(f"bubblewrap could not set up the sandbox ({said}); it needs user namespaces "
                           f"(sysctl user.max_user_namespaces > 0) and `{INSTALL}`")
    if limit_hit == "output_limit":
        stdout = stdout[:max_output_bytes]
        stderr = stderr[: max(0, max_output_bytes - len(stdout))]
        return SandboxResult("output_limit", stdout, stderr, process.returncode, wall, f"output limit: more than {max_output_bytes} bytes")
    if limit_hit == "timeout":
        return SandboxResult("timeout", stdout, stderr, process.returncode, wall, f"wall-clock limit of {wall_s:g} s")
    returncode = _signal_code(process.returncode)
    status, error = _classify(returncode, stderr)
    if status == "timeout":
        error = f"CPU time limit of {cpu_s:g} s"
    return SandboxResult(status, stdout, stderr, returncode, wall, error)


def _kill(process: subprocess.Popen) -> None:
    """bwrap and its session; the sandbox's PID namespace (every process in it) dies with bwrap."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


def _signal_code(returncode: int) -> int:
    """bwrap reports a code killed by signal N as 128 + N; as Popen does, that is -N here."""
    if returncode > 128 and returncode - 128 in signal.valid_signals():
        return -(returncode - 128)
    return returncode


def _classify(returncode: int, stderr: str) -> tuple[str, str]:
    last = next((line for line in reversed(stderr.strip().splitlines()) if line.strip()), "")
    if "MemoryError" in last or "Cannot allocate memory" in stderr:
        return "memory", f"memory limit: {last}"
    if returncode in (-signal.SIGXCPU, -signal.SIGKILL):  # the soft CPU limit, then the hard one
        return "timeout", "CPU time limit"
    if returncode == 0:
        return "finished", ""
    if returncode < 0:
        return "crash", f"killed by signal {signal.Signals(-returncode).name}" + (f": {last}" if last else "")
    return "crash", last or f"exit code {returncode}"
