#!/usr/bin/env python3
"""Time 'pmigrate fakedb' making 1M file rows (--metadata-only, SQLite); print a table.

Each run is a separate process tree writing into a fresh folder under --out.
Wall time, then CPU time and peak RSS from os.wait4 (CPU summed over the
process and its workers; RSS of the largest single process). The load average
at the start is printed too: on a shared machine it explains slow runs.
With --ab, runs alternate between the default (one process) and --jobs 2
(parts made by two worker processes), so both meet the same load.

    .venv/bin/python bench/bench_fakedb.py [--files 1000000] [--runs 2] [--ab]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import write_csv  # noqa: E402


def one_run(*, out: Path, files: int, seed: int, extra: list[str]) -> dict:
    target = out / "deployment"
    cmd = [sys.executable, "-m", "pmigrate", "fakedb", str(target), "--files", str(files), "--metadata-only",
           "--seed", str(seed), "-q", *extra]
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    load = os.getloadavg()[0]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"run failed with exit {proc.returncode}: {' '.join(cmd)}")
    con = sqlite3.connect(target / "plik.db")
    try:
        tables = [t for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        total = sum(con.execute(f"SELECT count(*) FROM `{t}`").fetchone()[0] for t in tables)
        file_rows = con.execute("SELECT count(*) FROM files").fetchone()[0]
    finally:
        con.close()
    return {
        "files": file_rows,
        "rows": total,
        "seconds": seconds,
        "cpu": usage.ru_utime + usage.ru_stime,
        "rss_mib": usage.ru_maxrss / 1024,  # kilobytes on Linux
        "db_mib": (target / "plik.db").stat().st_size / 2**20,
        "load": load,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=1_000_000, help="file rows per run (default: %(default)s)")
    p.add_argument("--runs", type=int, default=2, help="runs, each with its own seed and folder (default: %(default)s)")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "out", help="parent of the run folders (default: bench/out)")
    p.add_argument("--keep", action="store_true", help="keep each run's deployment (default: removed after measuring)")
    p.add_argument("--ab", action="store_true", help="alternate one process (A) and --jobs 2 (B) (default: A only)")
    args, extra = p.parse_known_args()
    variants = [("1 process", [])] + ([("--jobs 2", ["--jobs", "2"])] if args.ab else [])
    base = args.out / f"fakedb-{time.strftime('%Y%m%d-%H%M%S')}"
    print(f"pmigrate fakedb --files {args.files} --metadata-only (SQLite), {os.cpu_count()} CPUs")
    header = (
        f"{'run':>3} {'variant':>9} {'file rows':>10} {'all rows':>10} {'seconds':>8} {'rows/s':>9} {'files/s':>9} {'CPU s':>7}"
        f" {'peak RSS':>9} {'db size':>9} {'load':>5}"
    )
    print(header)
    print("-" * len(header))
    table: list[dict] = []
    plan = [(i, v) for i in range(1, args.runs + 1) for v in variants]
    for n, (i, (variant, flags)) in enumerate(plan, 1):
        out = base / f"run-{n}"
        out.mkdir(parents=True)
        r = one_run(out=out, files=args.files, seed=i, extra=[*flags, *extra])
        print(f"{n:>3} {variant:>9} {r['files']:>10} {r['rows']:>10} {r['seconds']:>8.1f} {r['rows'] / r['seconds']:>9.0f} "
              f"{r['files'] / r['seconds']:>9.0f} {r['cpu']:>7.1f} {r['rss_mib']:>6.0f} MiB {r['db_mib']:>5.0f} MiB "
              f"{r['load']:>5.1f}", flush=True)
        table.append({"run_index": n, "variant": variant, **r, "rows_per_s": r["rows"] / r["seconds"], "files_per_s": r["files"] / r["seconds"]})
        if not args.keep:
            shutil.rmtree(out)
    write_csv("fakedb", table, keys=("files", "variant", "run_index"))
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
