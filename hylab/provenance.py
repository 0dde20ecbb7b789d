"""What code, command and machine made a run: written into metrics.json and the run store.

A number in a table is traceable when its record names the git commit, whether the tree had
uncommitted changes (the diff is saved beside the record), the command line, the versions of
the libraries that shape the result, and the machine.
"""

import functools
import os
import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from hylab.redact import redact_text
from hylab.resolvers import PROJECT_ROOT

PACKAGES = ("torch", "lightning", "hydra-core", "omegaconf", "timm", "torchmetrics", "optuna", "tokenizers", "numpy")
DIFF_FILE = "git_diff.patch"


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def git_state() -> dict:
    """Commit, branch and dirty flag of the project checkout (None outside a git checkout)."""
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    status = _git("status", "--porcelain", "--untracked-files=normal") or ""
    untracked = [line[3:] for line in status.splitlines() if line.startswith("??")]
    return {
        "commit": commit.strip(),
        "branch": (_git("rev-parse", "--abbrev-ref", "HEAD") or "").strip() or None,
        "dirty": bool(status.strip()),
        "untracked": untracked[:50],
    }


def save_diff(run_dir: Path) -> str | None:
    """The uncommitted changes against HEAD, saved as a patch in the run dir."""
    diff = _git("diff", "HEAD", "--binary")
    if not diff:
        return None
    path = Path(run_dir) / DIFF_FILE
    path.write_text(diff)
    return path.name


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gib() -> float | None:
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        return round(pages * size / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def gpus() -> list[str]:
    """GPU names, through torch when it is already loaded (a run has it; a config path does not)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


@functools.cache
def _static() -> dict:
    return {
        "python": platform.python_version(),
        "packages": package_versions(),
        "machine": {
            "hostname": socket.gethostname(),
            "platform": platform.platform(),
            "cpu": cpu_model(),
            "cpu_count": os.cpu_count(),
            "memory_gib": memory_gib(),
        },
    }


def provenance(run_dir: Path | None = None) -> dict:
    """The provenance block of a run record; the diff goes into run_dir when the tree is dirty."""
    static = _static()
    git = git_state()
    if git.get("dirty") and run_dir is not None:
        git["diff_file"] = save_diff(run_dir)
    return {
        "git": git,
        "command": redact_text(" ".join(getattr(sys, "orig_argv", sys.argv))),
        "python": static["python"],
        "packages": static["packages"],
        "machine": {**static["machine"], "gpus": gpus()},
    }
