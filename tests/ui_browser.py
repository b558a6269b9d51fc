"""Helpers of the inspector's browser tests and screenshot script: the system Chromium, a served UI.

Playwright drives the Chromium of the system (`apt-get install chromium`); `playwright install`
is never used (it downloads browsers).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str | None:
    for name in ("/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if os.path.exists(name):
            return name
    return shutil.which("chromium")


def why_no_browser() -> str | None:
    """None when the browser tests can run, else the reason they are skipped."""
    # find_spec, not an import: this runs at collection in every xdist worker, and importing
    # playwright.sync_api cost ~1 s of CPU there whether or not the worker runs a browser test.
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed (pip install playwright)"
    if chromium_path() is None:
        return "no system Chromium (apt-get install chromium; .ci/run installs it when it can)"
    return None


@contextmanager
def served(journal: str, *extra: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """`agentloop ui --journal JOURNAL --port 0 ...` in a subprocess; yields its URL."""
    cmd = [sys.executable, "-m", "agentloop.cli", "ui", "--journal", journal, "--port", "0", *extra]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})}
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the server printed its URL (or died)
        if "http://" not in line:
            raise RuntimeError(
                f"agentloop ui did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}"
            )
        yield line.split(": ", 1)[1].strip()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()
