"""A live plikd on sqlite3 in rollback-journal mode keeps writing while pmigrate reads its database."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pmigrate import cli
from tests.conftest import REPO
from tests.metadata_helpers import write_cfg
from tests.servers import sqlite_database, stop_process

FILES = 200_000


@pytest.fixture(scope="module")
def deployment(tmp_path_factory) -> Path:
    """A fake plikd database of 200k files, as plikd creates it (journal_mode=DELETE)."""
    out = tmp_path_factory.mktemp("live") / "src"
    assert cli.main(["fakedb", str(out), "--files", str(FILES), "--metadata-only", "-q"]) == 0
    return out


def _start_writer(db: Path, tmp_path: Path) -> tuple[subprocess.Popen, Path, Path]:
    stop, out = tmp_path / "writer.stop", tmp_path / "writer.json"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "tests.plikd_writer", str(db), str(stop), str(out)], env=env)
    deadline = time.monotonic() + 30
    while not Path(str(out) + ".ready").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the writer did not start"
        time.sleep(0.05)
    return proc, stop, out


@pytest.mark.slow
def test_writer_never_waits_on_a_migration_pass(deployment, tmp_path, run_cli):
    db = deployment / "plik.db"
    target = sqlite_database(tmp_path / "target.db")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    proc, stop, out = _start_writer(db, tmp_path)
    try:
        r = run_cli("--config", str(deployment / "plikd.cfg"), "--to", str(write_cfg(target, tmp_path / "dst.cfg")),
                    "--metadata-only", "-q", "--json", str(tmp_path / "r.json"), env={"TMPDIR": str(scratch)})
        stop.touch()
        proc.wait(timeout=30)
    finally:
        stop_process(proc)
    assert r.returncode == 0, r.stdout + r.stderr
    writer = json.loads(out.read_text())
    print("writer:", writer)
    assert writer["failures"] == []
    assert writer["max_wait"] < 1.0, f"a commit of plikd's waited {writer['max_wait']:.2f}s on pmigrate"

    # One point in time: a prefix of the writer's rows, and the count it had set along with them.
    con = sqlite3.connect(target.go_dsn)
    try:
        keys = [k for (k,) in con.execute("SELECT key FROM settings WHERE key LIKE 'writer-%' ORDER BY key")]
        count = con.execute("SELECT download_count FROM uploads WHERE id = ?", (writer["upload"],)).fetchone()[0]
        files = con.execute("SELECT COUNT(*) FROM files").fetchone()[0]
    finally:
        con.close()
    assert 1 <= len(keys) < writer["commits"], "the writer must have been writing during the pass"
    assert keys == [f"writer-{i:06d}" for i in range(len(keys))]
    assert count == len(keys)
    assert files == FILES
    section = json.loads((tmp_path / "r.json").read_text())["sections"]
    assert section["metadata"]["ok"] and section["snapshot"]["journal_mode"] == "rollback"
    assert list(scratch.iterdir()) == []  # the snapshot is gone
