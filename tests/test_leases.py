"""Run leases name their holder by boot id + pid + start time, not by host name (#13).

The holder is a real process: a child interpreter that journals a run and is killed with
SIGKILL before it can release the lease, as a crash would.
"""

from __future__ import annotations

import io
import os
import sqlite3
import time
from pathlib import Path

import pytest
import warm_fork
from helpers import runs_main

from agentloop import Agent, RunLockedError, SQLiteJournal, ToolRegistry
from agentloop.testing import ScriptedModel, text

pytestmark = pytest.mark.anyio

KILLED = """
import os, sys, anyio
from agentloop import SQLiteJournal

async def main():
    j = SQLiteJournal(sys.argv[1])
    await j.create("r", {"model": "m", "messages": [{"role": "user", "content": "go"}]})
    os.kill(os.getpid(), 9)  # dies holding the lease

anyio.run(main)
"""


def killed_holder(db: Path) -> None:
    script = db.with_name("holder.py")
    script.write_text(KILLED)
    done = warm_fork.run(script, [str(db)], preload=warm_fork.AGENTLOOP_PRELOAD, timeout=120)  # forked warm
    assert done.returncode == -9, done.stderr


def lease(db: Path) -> tuple[str, int, float]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT host, pid, expires_at FROM agentloop_leases WHERE run_id='r'").fetchone()


def set_lease(db: Path, **values: object) -> None:
    with sqlite3.connect(db) as conn:
        for column, value in values.items():
            conn.execute(f"UPDATE agentloop_leases SET {column}=? WHERE run_id='r'", (value,))


async def resume(db: Path) -> str:
    journal = SQLiteJournal(db)
    try:
        result = await Agent(
            client=ScriptedModel([text("resumed")]), tools=ToolRegistry(), journal=journal
        ).resume("r")
    finally:
        journal.close()
    return result.output


async def test_dead_holder_is_taken_over_at_once_after_the_host_name_changed(tmp_path: Path) -> None:
    # The repro: the lease was written under one host name, the machine now has another; the
    # holder is dead. Before: "RunLockedError ... on <old name>" for lease_ttl (60 s).
    db = tmp_path / "runs.db"
    killed_holder(db)
    host, _, expires_at = lease(db)
    assert expires_at > time.time() + 30  # the lease has not expired: only the dead pid frees it
    set_lease(db, host="old-hostname|" + host.split("|", 1)[1])
    assert await resume(db) == "resumed"


async def test_live_holder_keeps_its_run_whatever_the_host_name(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    holder = SQLiteJournal(db)
    try:
        await holder.create("r", {"model": "m", "messages": [{"role": "user", "content": "go"}]})
        host, _, _ = lease(db)
        set_lease(db, host="renamed|" + host.split("|", 1)[1])
        with pytest.raises(RunLockedError, match=f"pid {os.getpid()} on renamed"):
            await resume(db)
    finally:
        holder.close()


async def test_a_reused_pid_does_not_keep_a_dead_holders_lease(tmp_path: Path) -> None:
    # The lease names this (live) process's pid but another start time: its holder was an earlier
    # process that had the same pid.
    db = tmp_path / "runs.db"
    killed_holder(db)
    host, _, _ = lease(db)
    name, machine, _start = host.split("|")
    set_lease(db, pid=os.getpid(), host=f"{name}|{machine}|1")
    assert await resume(db) == "resumed"


async def test_a_holder_on_another_machine_is_alive_until_its_lease_expires(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    killed_holder(db)
    set_lease(db, host="elsewhere|boot:another-boot-id/pid:[1]|123")
    with pytest.raises(RunLockedError, match="on elsewhere"):
        await resume(db)
    set_lease(db, expires_at=time.time() - 1)
    assert await resume(db) == "resumed"


async def test_an_old_format_lease_is_judged_by_host_name_and_pid(tmp_path: Path) -> None:
    import socket

    db = tmp_path / "runs.db"
    killed_holder(db)
    set_lease(db, host="some-other-host")  # agentloop 0.1: a bare host name, not this one
    with pytest.raises(RunLockedError, match="on some-other-host"):
        await resume(db)
    set_lease(db, host=socket.gethostname())  # this host, a dead pid: taken over
    assert await resume(db) == "resumed"


def test_runs_list_shows_a_killed_run_as_interrupted(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    killed_holder(db)
    out = io.StringIO()
    assert runs_main(["list", "--journal", str(db)], out=out, err=io.StringIO()) == 0
    assert out.getvalue().split()[:2] == ["r", "interrupted"]


async def test_runs_list_shows_a_live_run_as_running(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    holder = SQLiteJournal(db)
    try:
        await holder.create("r", {"model": "m", "messages": [{"role": "user", "content": "go"}]})
        out = io.StringIO()
        assert runs_main(["list", "--journal", str(db)], out=out, err=io.StringIO()) == 0
        assert out.getvalue().split()[:2] == ["r", "running"]
    finally:
        holder.close()
