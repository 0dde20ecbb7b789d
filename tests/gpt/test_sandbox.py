"""The tool sandbox: each way a run can end, and what the code inside can see and touch, judged by
outcomes outside (files, network, processes). The whole file runs once as it is and once again
without CAP_SYS_ADMIN (test_the_same_tests_pass_without_cap_sys_admin)."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from lightning_modules.gpt import tools
from lightning_modules.gpt.sandbox import PYTHON, SHM_MB, run_python
from tests.helpers import timeout_for

LIMITS = dict(cpu_s=1, memory_mb=256, wall_s=4, max_output_bytes=10_000)
ROOT = Path(__file__).resolve().parent.parent.parent
NO_SYS_ADMIN = "HYLAB_TEST_WITHOUT_CAP_SYS_ADMIN"  # set in the re-run under capsh


def processes_with(marker: str, within_s: float = 3.0) -> list[int]:
    """Host processes whose command line holds `marker`, once the sandbox has had `within_s` to go."""
    deadline = time.monotonic() + within_s
    while True:
        found = []
        for entry in os.listdir("/proc"):
            try:
                if entry.isdigit() and marker.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
            except OSError:
                continue
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def sleeper(marker: str) -> str:
    """Python that replaces the current process by a 60 s sleep whose command line shows `marker`."""
    return f"os.execv({PYTHON!r}, ['python3', '-c', 'import time; time.sleep(60)', {marker!r}])"


def test_finished_with_its_output():
    result = run_python("print(6 * 7)", **LIMITS)
    assert result.status == "finished" and result.stdout == "42\n" and result.returncode == 0


def test_an_exception_is_a_crash_with_its_last_line():
    result = run_python("1 / 0", **LIMITS)
    assert result.status == "crash" and result.error == "ZeroDivisionError: division by zero"
    assert "ZeroDivisionError" in result.text()


def test_infinite_loop_stops_at_the_cpu_limit():
    started = time.monotonic()
    result = run_python("while True:\n    pass", **LIMITS)
    assert result.status == "timeout" and "CPU" in result.error
    assert time.monotonic() - started < LIMITS["wall_s"] + 2


def test_sleeping_stops_at_the_wall_clock_limit():
    result = run_python("import time\ntime.sleep(60)", **{**LIMITS, "wall_s": 1})
    assert result.status == "timeout" and "wall-clock" in result.error and result.wall_s < 3


def test_memory_bomb():
    result = run_python("blocks = []\nwhile True:\n    blocks.append(bytearray(10**7))", **LIMITS)
    assert result.status == "memory"


def test_fork_bomb_is_contained_and_leaves_no_process():
    marker = f"forkbomb-{uuid.uuid4().hex}"
    bomb = (f"import os, time\nfor _ in range(10000):\n    try:\n        if os.fork() == 0:\n            {sleeper(marker)}\n"
            "    except OSError:\n        pass\ntime.sleep(60)")
    started = time.monotonic()
    result = run_python(bomb, **{**LIMITS, "wall_s": 2})
    assert result.status == "timeout" and time.monotonic() - started < 10
    assert not processes_with(marker)


def test_a_setsid_daemon_does_not_outlive_the_call():
    marker = f"daemon-{uuid.uuid4().hex}"
    code = f"import os\nif os.fork() == 0:\n    os.setsid()\n    {sleeper(marker)}\nprint('parent done')"
    result = run_python(code, **LIMITS)
    assert result.status == "finished" and result.stdout == "parent done\n" and result.wall_s < 3
    assert not processes_with(marker)


def test_huge_print_stops_at_the_output_limit():
    result = run_python("while True:\n    print('x' * 1000)", **LIMITS)
    assert result.status == "output_limit" and len(result.stdout) <= LIMITS["max_output_bytes"]


@pytest.mark.parametrize("write", [
    "open({path!r}, 'w').write('x')",
    "import os\nos.makedirs(os.path.dirname({path!r}), exist_ok=True)\nopen({path!r}, 'w').write('x')",
    "import os\nos.close(os.open({path!r}, os.O_WRONLY | os.O_CREAT))",
    "import pathlib\npathlib.Path({path!r}).write_text('x')",
    "import shutil\nshutil.copy('main.py', {path!r})",
    "import os\nos.mkdir({path!r})",
    "import os\nos.system('touch {path}')",
    # switching off an audit hook (the sandbox had one) and running a shell
    "import sys, subprocess\nsys.modules['__main__'].refuse = lambda what: None\nsubprocess.run(['/bin/sh', '-c', 'touch {path}'])",
    # running a program without subprocess: another interpreter, spawned directly
    "import os\nos.waitpid(os.posix_spawn({python!r}, ['python3', '-c', \"open({path!r}, 'w')\"], {{}}), 0)",
])
def test_cannot_write_outside(tmp_path, write):
    target = tmp_path / "escaped"
    result = run_python(write.format(path=str(target), python=PYTHON), **LIMITS)
    assert result.status in ("finished", "crash") and "SyntaxError" not in result.stderr
    assert not target.exists() and os.listdir(tmp_path) == []


def test_a_program_run_by_fork_exec_sees_nothing_and_touches_nothing(tmp_path):
    """`_posixsubprocess.fork_exec` ran /bin/sh past the old audit hook: now there is no shell, and an
    interpreter started the same way is in the same sandbox."""
    target = tmp_path / "escaped"
    inner = f"import os\nprint(os.getuid(), os.path.exists({str(ROOT)!r}))\ntry:\n    open({str(target)!r}, 'w')\nexcept OSError as err:\n    print(type(err).__name__)\n"
    code = f"""
import subprocess
try:
    subprocess.run(['/bin/sh', '-c', 'echo ran'])
except OSError as err:
    print('no shell:', type(err).__name__)
print(subprocess.run([{PYTHON!r}, 'inner.py'], capture_output=True, text=True).stdout)
"""
    result = run_python(code, files={"inner.py": inner}, **LIMITS)
    assert result.status == "finished", result.stderr
    assert result.stdout.startswith("no shell: FileNotFoundError\n65534 False\nFileNotFoundError")
    assert not target.exists()


def test_can_write_in_its_directory_tmp_and_shm_which_vanish_with_the_call():
    name = f"kept-{uuid.uuid4().hex}"
    code = f"import os\nfor d in ('.', '/tmp', '/dev/shm'):\n    open(os.path.join(d, {name!r}), 'w').write('kept')\nprint(open({name!r}).read(), os.getcwd())"
    result = run_python(code, **LIMITS)
    assert result.status == "finished" and result.stdout.startswith("kept ")
    later = run_python(f"import os\nprint([os.path.exists(os.path.join(d, {name!r})) for d in ('.', '/tmp', '/dev/shm')])", **LIMITS)
    assert later.stdout == "[False, False, False]\n"
    assert not any(Path(d, name).exists() for d in ("/tmp", "/dev/shm", tempfile.gettempdir()))


@pytest.mark.parametrize("folder", ["/dev/shm", "/tmp"])
def test_writing_to_tmpfs_is_bounded(folder):
    """128 MB into /dev/shm once took 0.11 s and stayed in memory after the call: now the mounts are
    small and private, so the writes stop at the mount's size."""
    code = f"""
import os
total = 0
try:
    for i in range(128):
        with open(os.path.join({folder!r}, f'f{{i}}'), 'wb') as handle:
            handle.write(b'x' * 2**20)
        total += 1
except OSError as err:
    print(type(err).__name__, err.errno)
print(total)
"""
    result = run_python(code, **{**LIMITS, "max_file_mb": 8})
    assert result.status == "finished", result.stderr
    error, total = result.stdout.split("\n")[:2]
    assert error == "OSError 28" and int(total) <= (SHM_MB if folder == "/dev/shm" else 8 + 1)  # ENOSPC


def test_clean_environment_no_privileges_and_no_root_files(monkeypatch, tmp_path):
    monkeypatch.setenv("SECRET_TOKEN", "hunter2")
    secret = tmp_path / "root_only"
    secret.write_text("hunter2")
    secret.chmod(0o600)
    code = f"""
import os
print(sorted(os.environ))
print(os.getuid(), os.getgid(), os.getgroups())
print(open('/proc/self/status').read().split('CapEff:')[1].split()[0])
try:
    os.setuid(0)
except OSError:  # uid 0 is not even mapped in its user namespace
    print('setuid refused')
for path in ({str(secret)!r}, '/etc/shadow', '/root', {str(ROOT)!r}, {sys.executable!r}):
    print(path, os.path.exists(path))
"""
    result = run_python(code, **LIMITS)
    lines = result.stdout.splitlines()
    assert "SECRET_TOKEN" not in lines[0] and set(eval(lines[0])) <= {"HOME", "LANG", "PATH", "PWD", "TMPDIR"}
    assert lines[1] == "65534 65534 []" and int(lines[2], 16) == 0 and lines[3] == "setuid refused"
    assert all(line.endswith(" False") for line in lines[4:]) and len(lines) == 9


def test_sees_no_host_process():
    """The host's processes (and their command lines, where a token could be) are out of sight."""
    code = "import os\nprint([open(f'/proc/{p}/cmdline', 'rb').read() for p in os.listdir('/proc') if p.isdigit()])"
    result = run_python(code, **LIMITS)
    cmdlines = eval(result.stdout)
    assert 1 <= len(cmdlines) <= 3 and not any(b"pytest" in line for line in cmdlines)


def test_no_network():
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    port = server.getsockname()[1]
    code = f"""
import socket
print(sorted(name for _, name in socket.if_nameindex()))
for address in [('127.0.0.1', {port}), ('8.8.8.8', 53)]:
    try:
        socket.create_connection(address, timeout=1)
        print('connected')
    except OSError as err:
        print(type(err).__name__)
"""
    try:
        result = run_python(code, **LIMITS)
        with pytest.raises(TimeoutError):
            server.accept()  # nothing reached the host's loopback
    finally:
        server.close()
    assert result.stdout.splitlines()[0] == "['lo']" and "connected" not in result.stdout


def test_files_are_written_beside_the_code():
    result = run_python("print(open('data/x.txt').read())", files={"data/x.txt": "hello"}, **LIMITS)
    assert result.stdout == "hello\n"
    for name in ("../x", "/etc/x"):
        with pytest.raises(ValueError):
            run_python("", files={name: "no"}, **LIMITS)


def without_bwrap(monkeypatch, tmp_path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


def test_without_bwrap_the_tool_refuses_in_one_line(monkeypatch, tmp_path):
    without_bwrap(monkeypatch, tmp_path)
    result = run_python("print('ran')", **LIMITS)
    assert result.status == "unavailable" and result.stdout == "" and "\n" not in result.error
    assert "bwrap" in result.error and "apt-get install bubblewrap" in result.error
    assert tools.run_in_sandbox("print('ran')").startswith("the python tool is unavailable: ")  # what the model is told


def test_when_the_namespaces_cannot_be_set_up_nothing_runs(monkeypatch):
    """A bwrap that cannot create its namespaces (user namespaces off) fails before the code: the
    tool says so; it never runs the code some other way."""
    with tempfile.TemporaryDirectory() as folder:  # one user 65534 may enter (pytest's tmp_path is root's only)
        os.chmod(folder, 0o755)
        fake = Path(folder) / "bwrap"
        fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to creating new namespace' >&2\nexit 1\n")
        fake.chmod(0o755)
        monkeypatch.setenv("PATH", f"{folder}:/usr/bin:/bin")
        result = run_python("print('ran')", **LIMITS)
    assert result.status == "unavailable" and result.stdout == "" and "\n" not in result.error
    assert "No permissions to creating new namespace" in result.error and "user namespaces" in result.error


def test_this_run_lacks_cap_sys_admin_when_it_should():
    capabilities = int(Path("/proc/self/status").read_text().split("CapEff:")[1].split()[0], 16)
    if os.environ.get(NO_SYS_ADMIN):
        assert not capabilities & (1 << 21)  # CAP_SYS_ADMIN
    else:
        pytest.skip("the re-run under capsh checks this")


@pytest.mark.slow
def test_the_same_tests_pass_without_cap_sys_admin():
    if os.environ.get(NO_SYS_ADMIN):
        pytest.skip("already the re-run")
    if os.geteuid() != 0 or shutil.which("capsh") is None:
        pytest.skip("needs root and capsh (apt-get install libcap2-bin) to drop CAP_SYS_ADMIN")
    command = f"{sys.executable} -m pytest -q -p no:cacheprovider {Path(__file__)}"
    done = subprocess.run(["capsh", "--drop=cap_sys_admin", "--", "-c", command], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout_for(1.5), env={**os.environ, NO_SYS_ADMIN: "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "failed" not in done.stdout
