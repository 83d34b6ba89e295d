"""Hostile text in the data never reaches the terminal raw: NULs, escapes, invalid UTF-8, 5,000-character ids.

Through the real CLI; its output is read as bytes, as a terminal gets it.
The JSON report keeps the full values, escaped as JSON escapes them.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from pmigrate.quote import line, shown
from tests import blobdeploy as bd
from tests.conftest import REPO
from tests.test_cli_errors import sqlite_deployment

LONGEST = 400  # no printed line is longer, whatever the data holds
NUL_ID = "a\x00b\x1b[31mred\u202e"  # a NUL, an ANSI escape, a right-to-left override
LONG_ID = "x" * 5000
NEWLINE_ID = "line1\nline2\r"


def _cli(*args: str, cwd: Path) -> tuple[int, list[str]]:
    """Exit status and every line of stdout and stderr, which must be UTF-8."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLIKD_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-m", "pmigrate", *args], cwd=cwd, env=env, capture_output=True, timeout=120)
    lines = []
    for raw in (proc.stdout, proc.stderr):
        lines += raw.decode("utf-8").split("\n")  # strict: invalid UTF-8 fails here
    return proc.returncode, lines


def _assert_printable(lines: list[str]) -> None:
    for text in lines:
        assert text.isprintable(), repr(text[:200])
        assert len(text) <= LONGEST, (len(text), text[:200])


def _hostile_source(root: Path) -> tuple[bd.Deployment, list[bd.Blob]]:
    blobs = bd.make_blobs(3, seed=51)
    dep = bd.file_source(root, blobs)
    with sqlite3.connect(dep.db) as con:
        con.execute("INSERT INTO uploads (id) VALUES ('UUUUUUUUUUUUUUUU')")
        for fid in (NUL_ID, LONG_ID, NEWLINE_ID):
            con.execute("INSERT INTO files (id, upload_id, status, size) VALUES (?, 'UUUUUUUUUUUUUUUU', 'uploaded', 1)", (fid,))
    return dep, blobs


@pytest.mark.parametrize("ignore", [True, False], ids=["ignore-errors", "stop-at-first"])
def test_hostile_ids_are_escaped_and_shortened_on_the_terminal(tmp_path, ignore):
    dep, blobs = _hostile_source(tmp_path / "src")
    target = bd.file_target(tmp_path / "dst")
    report = tmp_path / "r.json"
    args = ["--config", str(dep.config), "--to", str(target), "--data-only", "-q", "--json", str(report)]

    status, lines = _cli(*args, *(["--ignore-errors"] if ignore else []), cwd=tmp_path)

    assert status == 1
    _assert_printable(lines)
    text = "\n".join(lines)
    assert r"'a\x00b\x1b[31mred\u202e'" in text
    if ignore:
        assert re.search(r"'x{50,}…x{20,}' \(5000 characters\)", text), text
        assert r"'line1\nline2\r'" in text
        assert bd.file_target_blobs(tmp_path / "dst" / "files") == {b.file_id: b.data for b in blobs}
    else:
        assert sum(t.startswith("pmigrate: error: blob copy stopped: ") for t in lines) == 1
    # the JSON holds each id in full
    doc = json.loads(report.read_text(encoding="utf-8"))
    assert {p["item"] for p in doc["problems"]} == {NUL_ID, LONG_ID, NEWLINE_ID}


def test_invalid_utf8_in_the_source_database_is_escaped(tmp_path):
    dep, _ = _hostile_source(tmp_path / "src")
    with sqlite3.connect(dep.db) as con:
        con.execute(
            "INSERT INTO files (id, upload_id, status, size) VALUES (CAST(? AS TEXT), 'UUUUUUUUUUUUUUUU', 'uploaded', 1)",
            (b"\xff\xfebad\x1b[2J\x07",),
        )
    target = bd.file_target(tmp_path / "dst")
    status, lines = _cli("--config", str(dep.config), "--to", str(target), "--data-only", "-q", "--ignore-errors", cwd=tmp_path)
    assert status == 1  # as before: the source cannot be read
    _assert_printable(lines)
    assert any(r"bad\x1b[2J\x07" in t for t in lines), lines


def test_hostile_keys_in_the_metadata_copy(load_dump, dumps_dir, tmp_path):
    db = load_dump(dumps_dir / "sqlite3" / "0011-stats.sqlite3.dump")
    con = sqlite3.connect(db.go_dsn, isolation_level=None)
    con.execute("PRAGMA foreign_keys = OFF")
    con.execute("INSERT INTO files (id, upload_id, name, status, size) VALUES (?, ?, 'n', 'deleted', 0)", (LONG_ID + "\x1b", "GONE\x00UPLOAD"))
    con.close()
    src = sqlite_deployment(tmp_path / "src", create_db=False)
    src.write_text(src.read_text().replace(str(tmp_path / "src" / "plik.db"), db.go_dsn))
    dst = sqlite_deployment(tmp_path / "dst", create_db=False)
    report = tmp_path / "r.json"

    status, lines = _cli("--config", str(src), "--to", str(dst), "--metadata-only", "-q", "--json", str(report), cwd=tmp_path)

    assert status == 0  # an orphan is reported, not a failure
    _assert_printable(lines)
    orphan = [t for t in lines if "] orphan " in t]
    assert len(orphan) == 1 and r"upload_id 'GONE\x00UPLOAD' is not in uploads" in orphan[0], lines
    assert "(5007 characters)" in orphan[0]
    doc = json.loads(report.read_text(encoding="utf-8"))
    assert [p["item"] for p in doc["problems"]] == [f"files:{LONG_ID}\x1b"]


def test_a_target_file_name_that_is_not_utf8(tmp_path):
    """verify lists what no row claims: a name with invalid UTF-8, an escape and a newline is shown escaped."""
    dep = bd.file_source(tmp_path / "src", bd.make_blobs(2, seed=52))
    target = bd.file_target(tmp_path / "dst")
    assert _cli("--config", str(dep.config), "--to", str(target), "--data-only", "-q", cwd=tmp_path)[0] == 0
    folder = os.fsencode(tmp_path / "dst" / "files" / "zz")
    os.mkdir(folder)
    name = folder + b"/\xff\x1b[2Jevil\nname"
    with open(name, "wb") as f:
        f.write(b"x")
    report = tmp_path / "v.json"

    status, lines = _cli("verify", "--config", str(dep.config), "--to", str(target), "--data-only", "-q", "--json", str(report), cwd=tmp_path)

    assert status == 1  # unowned objects fail a verify
    _assert_printable(lines)
    assert any(r"zz/\xff\x1b[2Jevil\nname': 1 bytes stored in the target that no files row claims" in t for t in lines), lines
    doc = json.loads(report.read_text(encoding="utf-8"))
    assert [os.fsencode(p["item"]) for p in doc["problems"]] == [name]  # the JSON names the very bytes


def test_shown_and_line():
    assert shown("FILE1XXXXXXXXXXX") == "FILE1XXXXXXXXXXX"  # plain values stay bare
    assert shown("a b") == "'a b'"
    assert shown("it's\\") == r"'it\'s\\'"
    assert shown("a\udcffb") == r"'a\xffb'"  # a byte that was not UTF-8
    assert shown(b"\xff") == r"'\xff'"
    assert shown("abcdefghijklmnopqrstuvwxyz", limit=10) == "'abcdefg…xyz' (26 characters)"  # the start and the end
    assert shown("ab" + "\x00" * 100, limit=12) == r"'ab\x00…\x00' (102 characters)"
    assert line("ok line") == "ok line"
    assert line("a\x00\nb\udcfe") == r"a\x00\nb\xfe"
    assert line("y" * 50, limit=10) == "yyyyyyyyyy… (50 characters)"
