"""The tool sandbox: each way a run can end, and what it keeps the code from doing."""

import os
import time

import pytest

from lightning_modules.gpt.sandbox import _uid_processes, run_python

LIMITS = dict(cpu_s=1, memory_mb=256, wall_s=4, max_output_bytes=10_000)


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
    bomb = "import os, time\nfor _ in range(10000):\n    try:\n        os.fork()\n    except OSError:\n        pass\ntime.sleep(60)"
    started = time.monotonic()
    result = run_python(bomb, **{**LIMITS, "wall_s": 2})
    assert result.status == "timeout" and time.monotonic() - started < 10
    if os.geteuid() == 0:  # the run had a uid of its own: nothing of it survives
        uid = int(run_python("import os\nprint(os.getuid())", **LIMITS).stdout)
        assert uid != 0 and not _uid_processes(uid)


def test_huge_print_stops_at_the_output_limit():
    result = run_python("while True:\n    print('x' * 1000)", **LIMITS)
    assert result.status == "output_limit" and len(result.stdout) <= LIMITS["max_output_bytes"]


@pytest.mark.parametrize("write", [
    "open({path!r}, 'w').write('x')",
    "import os\nos.close(os.open({path!r}, os.O_WRONLY | os.O_CREAT))",
    "import pathlib\npathlib.Path({path!r}).write_text('x')",
    "import shutil\nshutil.copy('main.py', {path!r})",
    "import os\nos.mkdir({path!r})",
    "import os\nos.system('touch {path}')",
])
def test_cannot_write_outside_its_directory(tmp_path, write):
    target = tmp_path / "escaped"
    result = run_python(write.format(path=str(target)), **LIMITS)
    assert result.status == "crash" and not target.exists()
    assert "PermissionError" in result.error


def test_can_write_in_its_directory_which_is_removed_afterwards():
    code = "import os\nopen('out.txt', 'w').write('kept')\nprint(open('out.txt').read(), os.getcwd())"
    result = run_python(code, **LIMITS)
    assert result.status == "finished" and result.stdout.startswith("kept ")
    assert not os.path.exists(result.stdout.split()[1])


def test_clean_environment_and_no_privileges(monkeypatch):
    monkeypatch.setenv("SECRET_TOKEN", "hunter2")
    result = run_python("import os\nprint(sorted(os.environ))\nprint(os.getuid())", **LIMITS)
    names, uid = result.stdout.split("\n")[:2]
    assert "SECRET_TOKEN" not in names and eval(names) == ["HOME", "LANG", "PATH", "TMPDIR"]
    if os.geteuid() == 0:
        assert int(uid) != 0


def test_no_network():
    code = "import socket\nsocket.create_connection(('127.0.0.1', 9), timeout=1)"
    result = run_python(code, **LIMITS)
    assert result.status == "crash"


def test_files_are_written_beside_the_code():
    result = run_python("print(open('data/x.txt').read())", files={"data/x.txt": "hello"}, **LIMITS)
    assert result.stdout == "hello\n"
    with pytest.raises(ValueError):
        run_python("", files={"../x": "no"}, **LIMITS)
