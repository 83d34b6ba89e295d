"""A stand-in for plikd writing to its sqlite3 database: a commit every 10 ms, each one's wait recorded.

python -m tests.plikd_writer DB STOP OUT: writes until the file STOP exists,
then the figures to OUT (JSON). Each transaction adds settings row
writer-NNNNNN and sets one upload's download_count to the rows added so far,
so that a copy taken at one point in time holds a prefix of the rows and
the matching count. The busy timeout is go-sqlite3's default, as plikd runs;
synchronous=OFF makes a commit's wait the time it waits on locks, without
the disk's latency (which other work on the machine makes noisy).
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from pathlib import Path

BUSY_TIMEOUT = 5.0
EVERY = 0.01


def main(db: str, stop: str, out: str) -> None:
    con = sqlite3.connect(db, timeout=BUSY_TIMEOUT, isolation_level=None)
    con.execute("PRAGMA synchronous = OFF")
    upload = con.execute("SELECT id FROM uploads ORDER BY id LIMIT 1").fetchone()[0]
    commits, waits, failures = 0, [], []
    ready = Path(out + ".ready")
    while not Path(stop).exists():
        started = time.monotonic()
        try:
            con.execute("BEGIN")
            con.execute('INSERT INTO settings ("key", "value") VALUES (?, ?)', (f"writer-{commits:06d}", str(commits)))
            con.execute("UPDATE uploads SET download_count = ? WHERE id = ?", (commits + 1, upload))
            con.execute("COMMIT")
            commits += 1
        except sqlite3.OperationalError as exc:
            failures.append(str(exc))
            if con.in_transaction:
                con.execute("ROLLBACK")
        waits.append(time.monotonic() - started)
        if commits == 1:
            ready.touch()
        time.sleep(EVERY)
    Path(out).write_text(json.dumps({"upload": upload, "commits": commits, "max_wait": max(waits), "failures": failures}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
