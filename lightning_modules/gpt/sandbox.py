"""Run untrusted Python (a model's tool call, a HumanEval completion) in a separate, limited process.

    result = run_python("print(6 * 7)", cpu_s=2, memory_mb=256, wall_s=5, max_output_bytes=10_000)
    result.status   # finished | timeout | memory | crash | output_limit
    result.stdout   # "42\n"

The child is `python -I -B` (no PYTHON* variables, no user site, no script folder on sys.path)
started in a new session, in a fresh temporary directory that is removed afterwards, with an
environment of PATH, HOME (that directory), TMPDIR and LANG only. Before the code runs, the child
itself (a short bootstrap, so the parent needs no `preexec_fn`, which is unsafe in a threaded
server) applies, in this order:

- a network namespace of its own (no interface but a down loopback) when it runs as root;
- kernel resource limits: CPU seconds (RLIMIT_CPU), address space (RLIMIT_AS = memory_mb),
  processes (RLIMIT_NPROC), size of any file it writes (RLIMIT_FSIZE), open files, no core dumps;
- as root, a user id of its own (a fresh uid from a high, unused range, no groups): the kernel then
  forbids writing anywhere but world-writable places and its own directory, the process limit
  counts only this run's processes, and every process of that uid is killed when the run ends;
- an audit hook (PEP 578) that refuses, from Python code, writes outside the directory, running
  other programs (subprocess, os.system, exec*, spawn*), ctypes and sockets.

The parent enforces the wall-clock limit and the output limit (stdout + stderr together) and kills
the whole run when one is hit. What this does NOT protect against is listed in docs/gpt.md.
"""

import functools
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger("hylab")
STATUSES = ("finished", "timeout", "memory", "crash", "output_limit")
UID_RANGE = (200_000, 260_000)  # no account has these ids; one per concurrent run when root

# Runs in the child before the code: limits, network namespace, own uid, audit hook, then the code.
BOOTSTRAP = r"""
import json, os, resource, sys
cfg = json.loads(sys.argv[1])
if cfg["netns"]:
    import ctypes
    ctypes.CDLL(None, use_errno=True).unshare(0x40000000)  # CLONE_NEWNET; a failure leaves the network as it is
    del ctypes, sys.modules["ctypes"]
for name, value in cfg["limits"].items():
    resource.setrlimit(getattr(resource, name), (value, value) if name != "RLIMIT_CPU" else (value, value + 1))
if cfg["uid"] is not None:
    os.setgroups([]); os.setgid(cfg["uid"]); os.setuid(cfg["uid"])
ROOT = os.path.realpath(os.getcwd())
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
PATH_EVENTS = {"os.remove": 1, "os.rmdir": 1, "os.mkdir": 1, "os.rename": 2, "os.symlink": 2, "os.link": 2,
               "os.chmod": 1, "os.chown": 1, "os.truncate": 1, "os.utime": 1, "os.chflags": 1, "os.mkfifo": 1, "os.mknod": 1}
REFUSED = ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "pty.spawn", "os.startfile",
           "socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg")
def inside(path):
    if isinstance(path, int):
        return True
    real = os.path.realpath(os.fsdecode(path))
    return real == ROOT or real.startswith(ROOT + os.sep) or real == os.devnull
def refuse(what):
    raise PermissionError(f"the sandbox does not allow {what}")
def hook(event, args):
    if event == "open":
        path, mode, flags = args
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (isinstance(flags, int) and flags & WRITE_FLAGS)
        if writing and not inside(path):
            refuse(f"writing {path!r} (outside its directory)")
    elif event in PATH_EVENTS:
        for path in args[: PATH_EVENTS[event]]:
            if not inside(path):
                refuse(f"{event} on {path!r} (outside its directory)")
    elif event.startswith(REFUSED):
        refuse(event)
    elif event.startswith("ctypes."):
        refuse("ctypes")
sys.addaudithook(hook)
source = open("main.py").read()
del cfg, json, resource, hook, name, value
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
    error: str = ""  # one line: what went wrong (the exception, the limit hit)

    @property
    def ok(self) -> bool:
        return self.status == "finished"

    def to_dict(self) -> dict:
        return asdict(self)

    def text(self, limit: int = 2000) -> str:
        """What a model sees as the tool's output: stdout, or the error line when the run failed."""
        out = self.stdout if self.ok else (self.stdout + (self.error or self.status)).strip()
        return out if len(out) <= limit else out[:limit] + "..."


def _uid_processes(uid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/status") as handle:
                    for line in handle:
                        if line.startswith("Uid:"):
                            if int(line.split()[1]) == uid:
                                pids.append(int(entry))
                            break
            except OSError:
                continue
    return pids


def _fresh_uid() -> int:
    while True:
        uid = random.randrange(*UID_RANGE)
        if not _uid_processes(uid):
            return uid


def _kill_all(process: subprocess.Popen, uid: int | None) -> None:
    """The child's session, and (as root) every process left with the run's uid."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if uid is not None:
        for _ in range(20):  # a fork bomb may still be forking while we kill
            pids = _uid_processes(uid)
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


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


@functools.cache
def sandbox_python() -> tuple[str, bool]:
    """(interpreter, drop privileges): as root, the first Python whose standard library a fresh uid
    can read (a Python installed under /root is not readable by others); else this one."""
    if os.geteuid() != 0:
        return sys.executable, False
    for candidate in dict.fromkeys([sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"]):
        if os.path.exists(candidate):
            probe = run_python("import json, subprocess, math", python=candidate, drop_privileges=True, wall_s=20)
            if probe.ok:
                return candidate, True
    log.warning("no Python whose standard library an unprivileged user can read: the sandbox runs as root")
    return sys.executable, False


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
    isolate_network: bool = True,
    python: str | None = None,
    drop_privileges: bool | None = None,
) -> SandboxResult:
    """Run `code` as main.py in a fresh directory (with `files` written beside it) under the limits.
    `python` / `drop_privileges` default to `sandbox_python()`."""
    if python is None:
        python, default_drop = sandbox_python()
        drop_privileges = default_drop if drop_privileges is None else drop_privileges
    is_root = os.geteuid() == 0
    uid = _fresh_uid() if is_root and drop_privileges else None
    nproc = max_processes if uid is not None else len(_uid_processes(os.getuid())) + max_processes
    limits = {
        "RLIMIT_CPU": max(1, int(round(cpu_s))),
        "RLIMIT_AS": memory_mb * 2**20,
        "RLIMIT_NPROC": nproc,
        "RLIMIT_FSIZE": max_file_mb * 2**20,
        "RLIMIT_NOFILE": max_open_files,
        "RLIMIT_CORE": 0,
    }
    workdir = Path(tempfile.mkdtemp(prefix="hylab-sandbox-"))
    try:
        (workdir / "main.py").write_text(code)
        for name, text in (files or {}).items():
            target = (workdir / name).resolve()
            if workdir.resolve() not in target.parents:
                raise ValueError(f"sandbox file {name!r} is outside the sandbox directory")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        if uid is not None:
            for path in [workdir, *workdir.rglob("*")]:
                os.chown(path, uid, uid)
        config = {"limits": limits, "uid": uid, "netns": bool(isolate_network and is_root)}
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(workdir), "TMPDIR": str(workdir), "LANG": "C.UTF-8"}
        return _run([python, "-I", "-B", "-c", BOOTSTRAP, json.dumps(config)], workdir, env, uid, wall_s, max_output_bytes, cpu_s)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _run(command, workdir, env, uid, wall_s, max_output_bytes, cpu_s) -> SandboxResult:
    import selectors

    started = time.monotonic()
    process = subprocess.Popen(
        command, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True, close_fds=True,
    )
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
        _kill_all(process, uid)
        process.wait()
        selector.close()
        for stream in buffers:
            stream.close()
    wall = time.monotonic() - started
    stdout, stderr = (bytes(b).decode("utf-8", errors="replace") for b in buffers.values())
    if limit_hit == "output_limit":
        stdout = stdout[:max_output_bytes]
        stderr = stderr[: max(0, max_output_bytes - len(stdout))]
        return SandboxResult("output_limit", stdout, stderr, process.returncode, wall, f"output limit: more than {max_output_bytes} bytes")
    if limit_hit == "timeout":
        return SandboxResult("timeout", stdout, stderr, process.returncode, wall, f"wall-clock limit of {wall_s:g} s")
    status, error = _classify(process.returncode, stderr)
    if status == "timeout":
        error = f"CPU time limit of {cpu_s:g} s"
    return SandboxResult(status, stdout, stderr, process.returncode, wall, error)
