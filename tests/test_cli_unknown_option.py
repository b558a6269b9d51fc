"""`agentloop --bogus` names the unknown option (round-3 outside-in finding: argparse said only
"the following arguments are required: COMMAND"). Known top-level options still work, with
argparse's prefixes (`--verb`) and short flags run together (`-vh`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentloop.cli import main


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--bogus"], "'--bogus'"),
        (["-v", "--bogus=2", "demo"], "'--bogus'"),
        (["-x", "demo"], "'-x'"),
        (["-vz"], "'-vz'"),
    ],
)
def test_main_names_an_unknown_option_before_the_command(
    argv: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert f"unrecognized option {named} before the command" in err and "COMMAND" not in err.splitlines()[-1]


@pytest.mark.parametrize("argv", [["--version"], ["--vers"], ["-h"], ["-vh"], ["--help"]])
def test_known_top_level_options_still_work(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0 and "agentloop" in capsys.readouterr().out


def test_the_installed_command_as_written() -> None:
    script = Path(sys.executable).parent / "agentloop"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLUX_", "AGENTLOOP_"))}
    done = subprocess.run(
        [str(script), "--bogus"], capture_output=True, text=True, timeout=120, check=False, env=env
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "agentloop: error: unrecognized option '--bogus' before the command" in done.stderr
