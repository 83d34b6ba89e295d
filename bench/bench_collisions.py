#!/usr/bin/env python3
"""What the key-collision check of a mysql target costs: time and memory against the number of files.

    .venv/bin/python bench/bench_collisions.py [--files 1000000] [--out DIR]

A Plik sqlite3 source with N files (bench_metadata's generator, file ids
made random as plikd's are) is checked
against a fresh MariaDB target (the source's keys only), then against the
same target after a full copy (a re-run: the source's keys joined with the
target's). Prints the seconds of the check alone, the keys it read, and the
peak of Python's own allocations during it (tracemalloc): the check streams,
so that peak must not grow with N.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.bench_metadata import Target, cfg, generate, source_rows  # noqa: E402
from bench.common import write_csv  # noqa: E402


def timed_check(src_cfg: Path, dst_cfg: Path) -> tuple[float, float]:
    """(seconds, Python peak MB) of collisions.check() on a fresh plan."""
    from pmigrate import config
    from pmigrate.metadata import collisions, copier
    from pmigrate.options import RunOptions

    opts = RunOptions(data=False, quiet=True)
    src, dst = config.load(src_cfg), config.load(dst_cfg)
    plan = copier.preflight(src, dst, opts=opts)  # runs the check once: warms the caches
    try:
        tracemalloc.start()
        t0 = time.perf_counter()
        found = collisions.check(plan, opts=opts)
        seconds = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert not found, found
    finally:
        plan.src_engine.dispose()
        plan.dst_engine.dispose()
    return seconds, peak / 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one, removed after)")
    args = ap.parse_args()
    rows = []
    for files in args.files:
        work = Path(tempfile.mkdtemp(prefix="pmbench-", dir=args.out))
        target = Target("mysql", work, f"pmbench_{uuid.uuid4().hex[:8]}")
        try:
            generate(work / "plik.db", files=files)
            with sqlite3.connect(work / "plik.db") as con:  # plikd's file ids are random, not in insertion order
                con.execute("UPDATE files SET id = substr(hex(randomblob(8)), 1, 16)")
            keys = source_rows(work / "plik.db")
            src_cfg = cfg(work / "src.cfg", "sqlite3", str(work / "plik.db"))
            dst_cfg = cfg(work / "dst.cfg", "mysql", target.go_dsn())
            target.create()
            fresh = timed_check(src_cfg, dst_cfg)
            r = subprocess.run(
                [sys.executable, "-m", "pmigrate", "--config", str(src_cfg), "--to", str(dst_cfg), "--metadata-only", "-q"],
                cwd=REPO, capture_output=True, text=True,
            )
            if r.returncode != 0:
                sys.exit(f"bench_collisions: the copy failed: {r.stderr.strip()[-300:]}")
            t0 = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "pmigrate", "--config", str(src_cfg), "--to", str(dst_cfg), "--metadata-only", "-q"],
                cwd=REPO, capture_output=True, text=True, check=True,
            )
            rerun_total = time.perf_counter() - t0
            rerun = timed_check(src_cfg, dst_cfg)
            for case, (secs, peak) in (("fresh target", fresh), ("re-run", rerun)):
                rows.append({"files": files, "keys": keys, "case": case, "seconds": round(secs, 2),
                             "keys_per_s": round(keys / secs), "python_peak_mb": round(peak, 1),
                             "whole_rerun_s": round(rerun_total, 1) if case == "re-run" else ""})
        finally:
            target.drop()
            shutil.rmtree(work, ignore_errors=True)
    print(f"{'files':>9} {'keys':>9} {'case':<13} {'seconds':>8} {'keys/s':>9} {'Python peak MB':>15} {'whole re-run s':>15}")
    for r in rows:
        print(f"{r['files']:>9,} {r['keys']:>9,} {r['case']:<13} {r['seconds']:>8.1f} {r['keys_per_s']:>9,} "
              f"{r['python_peak_mb']:>15.1f} {r['whole_rerun_s']!s:>15}")
    print("seconds: collisions.check() alone, every table with a text key, in a metadata preflight")
    write_csv("collisions", rows, keys=("files", "case"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
