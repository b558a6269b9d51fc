"""Screenshots of the run inspector's main pages, written to docs/img/ (shown in the README).

    .venv/bin/python scripts/ui_screenshots.py

Journals the runs of tests/ui_runs.py (real runs: every outcome, a pause, a crash and resume),
serves them with `agentloop ui`, and photographs the pages with the system Chromium.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from ui_browser import browser, served, why_no_browser  # noqa: E402
from ui_runs import build_journal  # noqa: E402

PAGES = [
    ("ui-runs.png", "/", None),
    ("ui-run-errors.png", "/runs/errors", "#call-e3"),
    ("ui-run-resumed.png", "/runs/resumed", None),
    ("ui-approval.png", "/runs/refund", None),
    ("ui-compare.png", "/compare?run=weather&run=weather-fast", None),
]


def main() -> int:
    reason = why_no_browser()
    if reason:
        print(f"cannot take screenshots: {reason}", file=sys.stderr)
        return 1
    out = ROOT / "docs" / "img"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "runs.db")
        anyio.run(build_journal, path)
        with served(path) as url, browser() as b:
            page = b.new_page(viewport={"width": 1280, "height": 800})  # type: ignore[attr-defined]
            base = url.rstrip("/")
            for name, target, open_call in PAGES:
                page.goto(base + target)
                if open_call:
                    page.click(f"{open_call} summary")
                page.screenshot(path=str(out / name), full_page=True)
                print(f"wrote {out / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
