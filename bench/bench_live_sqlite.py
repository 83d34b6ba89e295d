"""How long a live plikd on sqlite3 (rollback journal) waits on a migration pass.

    .venv/bin/python bench/bench_live_sqlite.py [--files 200000 1000000]

For each size: a fake deployment (`pmigrate fakedb --metadata-only`), then
tests/plikd_writer.py committing every 10 ms (busy timeout 5 s, as plikd)
while `pmigrate --metadata-only` copies the database into a new sqlite3
file. Printed: the database size, the snapshot (seconds, attempts, read
locks taken, the longest), the whole pass, and the writer's side: commits
during the pass, its longest wait for a commit, failed commits. The writer runs with
synchronous=OFF, so its waits are lock waits, not the disk's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import print_table, write_csv  # noqa: E402


def _pmigrate(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "pmigrate", *args], env=env, capture_output=True, text=True, check=False)


def one(files: int, work: Path) -> dict:
    src = work / f"src-{files}"
    r = _pmigrate("fakedb", str(src), "--files", str(files), "--metadata-only", "-q")
    assert r.returncode == 0, r.stderr
    db = src / "plik.db"
    target = work / f"target-{files}.db"
    cfg = work / f"target-{files}.cfg"
    cfg.write_text(f'[MetadataBackendConfig]\n  Driver = "sqlite3"\n  ConnectionString = "{target}"\n')
    stop, out = work / f"stop-{files}", work / f"writer-{files}.json"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    writer = subprocess.Popen([sys.executable, "-m", "tests.plikd_writer", str(db), str(stop), str(out)], env=env)
    while not Path(str(out) + ".ready").exists():
        time.sleep(0.02)
    report = work / f"report-{files}.json"
    started = time.monotonic()
    r = _pmigrate("--config", str(src / "plikd.cfg"), "--to", str(cfg), "--metadata-only", "-q", "--json", str(report))
    seconds = time.monotonic() - started
    stop.touch()
    writer.wait()
    assert r.returncode == 0, r.stdout + r.stderr
    w = json.loads(out.read_text())
    snap = json.loads(report.read_text())["sections"]["snapshot"]
    return {
        "files": files,
        "db_mib": db.stat().st_size / 2**20,
        "snapshot_s": snap["seconds"],
        "attempts": snap["attempts"],
        "read_locks": snap["read_locks"],
        "longest_lock_ms": round(snap["longest_lock_seconds"] * 1000),
        "pass_s": seconds,
        "writer_commits": w["commits"],
        "writer_max_wait_ms": round(w["max_wait"] * 1000),
        "writer_failures": len(w["failures"]),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, nargs="+", default=[200_000, 1_000_000])
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="pmigrate-bench-live-") as tmp:
        rows = [one(n, Path(tmp)) for n in args.files]
    header = list(rows[0])
    print_table(header, [[r[h] for h in header] for r in rows])
    write_csv("live_sqlite", rows, keys=["files"])


if __name__ == "__main__":
    main()
