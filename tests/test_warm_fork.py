"""tests/warm_fork.py: a script forked from the warm server runs as `python script.py args` would.

The crash tests rely on it (tests/crash_harness.py, tests/test_nested_crash.py): a worker's exit
status, its SIGKILL, its pipes and its `__main__` must be those of a process of its own.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
import warm_fork

PRELOAD = ("json",)

SCRIPT = """
import os, sys, threading, atexit
print("argv", sys.argv[1:], __name__, sys.path[0] == os.path.dirname(os.path.abspath(__file__)), flush=True)
print("pid", os.getpid(), flush=True)
line = sys.stdin.readline().strip()
if line == "raise":
    raise ValueError("boom")
if line == "kill":
    os.kill(os.getpid(), 9)
atexit.register(lambda: print("atexit ran"))
threading.Thread(target=lambda: print("thread joined")).start()
print("to stderr", file=sys.stderr)
sys.exit(int(line))
"""


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "child.py"
    path.write_text(SCRIPT)
    return path


def start(script: Path, what: str) -> tuple[warm_fork.WarmProcess | subprocess.Popen[str], int]:
    proc = warm_fork.spawn(script, [str(os.getpid()), "x y"], preload=PRELOAD)
    assert proc.stdout is not None and proc.stdin is not None
    assert proc.stdout.readline() == f"argv ['{os.getpid()}', 'x y'] __main__ True\n"
    assert proc.stdout.readline() == f"pid {proc.pid}\n" and proc.pid != os.getpid()  # its own process
    proc.stdin.write(what + "\n")
    proc.stdin.flush()
    return proc, proc.pid


def test_exit_code_stdout_stderr_and_a_normal_interpreter_exit(script: Path) -> None:
    proc, _ = start(script, "3")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3
    assert sorted(out.splitlines()) == ["atexit ran", "thread joined"]
    assert err == "to stderr\n"


def test_an_uncaught_exception_exits_1_with_its_traceback(script: Path) -> None:
    proc, _ = start(script, "raise")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert err.rstrip().endswith("ValueError: boom")


def test_a_sigkill_from_inside_or_outside_is_the_exit_status(script: Path) -> None:
    proc, _ = start(script, "kill")
    assert proc.wait(timeout=60) == -signal.SIGKILL
    proc.communicate(timeout=60)
    other = warm_fork.spawn(script, [str(os.getpid()), "x y"], preload=PRELOAD)  # waits on stdin
    with pytest.raises(subprocess.TimeoutExpired):
        other.wait(timeout=0)
    other.send_signal(signal.SIGKILL)
    assert other.wait(timeout=60) == -signal.SIGKILL
    other.communicate(timeout=60)


def test_run_is_subprocess_run(tmp_path: Path) -> None:
    path = tmp_path / "echo.py"
    path.write_text("import sys\nprint(' '.join(sys.argv[1:]))\nsys.exit(5)\n")
    done = warm_fork.run(path, ["a", "b"], preload=PRELOAD, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (5, "a b\n", "")


LAUNCHED = """
import os, signal, sys
print(sys.argv[1:], os.environ.get("ONLY_HERE"), os.getcwd(), flush=True)
if sys.stdin.readline().strip() == "wait":
    print("waiting", flush=True)
    signal.pause()
print("to stderr", file=sys.stderr)
sys.exit(4)
"""


def launch(tmp_path: Path) -> subprocess.Popen[str]:
    path = tmp_path / "launched.py"
    path.write_text(LAUNCHED)
    cmd = warm_fork.command(path, ["a"], preload=PRELOAD)
    env = {"PATH": os.environ["PATH"], "ONLY_HERE": "yes"}  # as an MCP client passes a few variables
    pipe = subprocess.PIPE
    proc = subprocess.Popen(cmd, stdin=pipe, stdout=pipe, stderr=pipe, text=True, env=env, cwd=tmp_path)
    assert proc.stdout is not None
    assert proc.stdout.readline() == f"['a'] yes {tmp_path}\n"  # argv, the launcher's env and cwd
    return proc


def test_a_launched_script_ends_the_launcher_with_its_exit_code(tmp_path: Path) -> None:
    proc = launch(tmp_path)
    out, err = proc.communicate("go\n", timeout=60)
    assert (proc.returncode, out, err) == (4, "", "to stderr\n")


def test_a_launcher_passes_sigterm_on_and_ends_as_the_script_does(tmp_path: Path) -> None:
    proc = launch(tmp_path)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("wait\n")
    proc.stdin.flush()
    assert proc.stdout.readline() == "waiting\n"
    proc.terminate()
    assert proc.wait(timeout=60) == -signal.SIGTERM
    assert proc.communicate(timeout=60) == ("", "")  # the pipes end with the script
