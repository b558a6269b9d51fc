"""`agentloop ui` refuses a file that is not a journal at start-up, as `agentloop runs` does
(round 7: it served a 500 "file is not a database" on every page instead)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from helpers import runs_main, ui_main


@pytest.mark.parametrize("kind", ["text", "other-sqlite", "empty-sqlite-tables", "empty-file"])
def test_ui_refuses_a_file_that_is_not_a_journal_before_serving(
    tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "notdb.db"
    if kind == "text":
        path.write_text("these are my notes, not a database\n")
    elif kind == "empty-file":
        path.touch()
    else:
        conn = sqlite3.connect(path)
        conn.execute(
            "CREATE TABLE notes (body TEXT)"
            if kind == "other-sqlite"
            else "CREATE TABLE agentloop_meta (key TEXT, value TEXT)"
        )
        conn.commit()
        conn.close()
    before = path.read_bytes()
    assert ui_main(["--journal", str(path), "--port", "0"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("agentloop ui: ") and "Traceback" not in err
    assert path.read_bytes() == before  # refused read-only: the file is untouched
    if kind == "empty-file":  # `agentloop runs` makes an empty file a journal; the inspector only reads
        assert "is empty, not a journal yet" in err
        assert runs_main(["--journal", str(path), "list"]) == 0
        return
    assert "journal" in err and "pass --journal PATH" in err
    # `agentloop runs list` refuses the same file the same way (exit 1, a line on stderr)
    assert runs_main(["--journal", str(path), "list"]) == 1
