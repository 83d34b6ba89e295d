#!/usr/bin/env python3
"""pmigrate against its peers at their fastest, case by case, in one command: the figures a user compares.

    .venv/bin/python bench/bench_peers.py --case all [--scale 1] [--rounds 3] [--workers 4]

Cases (--case, comma-separated, or all):
  one-file       one blob of 4 KiB, file -> file, whole command: the fixed cost
  one-s3         one blob of 4 KiB, file -> S3 (moto), whole command
  mixed-s3       923 blobs of mixed sizes (230 MiB), file -> S3 (moto), PartSize 5 MiB
  small5k-file   5,000 blobs of about 4 KiB, file -> file
  small20k-file  20,000 blobs of about 4 KiB, file -> file
  metadata       sqlite3 -> postgres against pgloader, and sqlite3 -> mysql against -> postgres

The blob cases are bench_blobs.py's (cases e, a, d, b), run with pmigrate,
rclone at its defaults and rclone at its fastest (bench_blobs.RCLONE_FAST_*)
at the same concurrency (--workers N = --transfers N), alternating the tools
round by round, each run into a new folder or bucket; seconds are medians of
the rounds, from the start of each command to its exit. The metadata case
is bench_metadata.py's, rounds alternating pmigrate and pgloader. --scale
shrinks the mixed and small cases (not the one-blob ones) and
--metadata-files sets the metadata source's size.

Printed: one line per case with the peer's time over pmigrate's (above 1:
pmigrate is faster) next to the goal; every row also goes to
bench/results/peers.csv with the load average of the run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import bench_blobs as bb  # noqa: E402
from bench import bench_metadata as bm  # noqa: E402
from bench.common import print_table, write_csv  # noqa: E402

MiB = 1 << 20

# case -> (bench_blobs case, target, S3 PartSize, tools, scaled by --scale)
BLOB_CASES = {
    "one-file": ("e", "local", 16 * MiB, ["pmigrate", "rclone-fast", "rclone"], False),
    "one-s3": ("e", "s3", 16 * MiB, ["pmigrate", "rclone-fast", "rclone"], False),
    "mixed-s3": ("a", "s3", 5 * MiB, ["pmigrate", "rclone-fast", "rclone"], True),
    "small5k-file": ("d", "local", 16 * MiB, ["pmigrate", "rclone-fast", "rclone"], True),
    "small20k-file": ("b", "local", 16 * MiB, ["pmigrate", "rclone-fast", "rclone", "cp"], True),
}
MIXED_SCALE = 0.17  # of bench_blobs' case a: 923 blobs, 230 MiB
CASES = [*BLOB_CASES, "metadata"]

# What pmigrate should reach: (peer, least ratio of the peer's time to pmigrate's)
GOALS = {
    "one-file": ("rclone-fast", 1.0),
    "one-s3": ("rclone-fast", 1.0),
    "mixed-s3": ("rclone-fast", 1.0),
    "small5k-file": ("rclone-fast", 1.0),
    "small20k-file": ("rclone-fast", 2.0),
}
FIXED_COST_GOAL = 0.3  # seconds, for the whole command on one blob


def blob_case(name: str, work: Path, *, scale: float, rounds: int, workers: int, s3: bb.S3 | None) -> tuple[bb.Row, list[dict]]:
    letter, target, part, tools, scaled = BLOB_CASES[name]
    size = scale * (MIXED_SCALE if letter == "a" else 1.0) if scaled else 1.0
    built = work / f"build-{name}"
    shutil.rmtree(built, ignore_errors=True)
    (case,) = bb.build([letter], built, size)
    row = bb.measure_row(case, target, tools, work / name, rounds=rounds, workers=workers, s3=s3, part_size=part, tag=name)
    out = []
    pm = row.median("pmigrate")
    for tool in tools:
        med = row.median(tool)
        lingers = [r.linger for r in row.runs[tool] if r.ok]
        out.append({"case": name, "tool": tool, "workers": workers, "scale": scale if scaled else 1.0,
                    "rounds": len(lingers), "blobs": case.blobs, "bytes": case.bytes, "part_size": part if target == "s3" else "",
                    "seconds": med if med is not None else float("nan"),
                    "linger_s": statistics.median(lingers) if lingers else float("nan"),
                    "cpu_s": row.cpu(tool), "pss_mib": row.peak_pss(tool) / MiB,
                    "server_cpu_s": row.server_cpu(tool) if target == "s3" else float("nan"),
                    "ratio": (med / pm) if med and pm and tool != "pmigrate" else float("nan")})  # fmt: skip
    return row, out


def metadata_case(work: Path, *, files: int, rounds: int) -> list[dict]:
    """bench_metadata.py's runs: pmigrate -> postgres, pgloader -> postgres, pmigrate -> mysql; medians of the rounds."""
    work.mkdir(parents=True, exist_ok=True)
    src, how = bm.make_source(work, files=files)
    rows = bm.source_rows(src)
    src_cfg = bm.cfg(work / "src.cfg", "sqlite3", str(src))
    pgloader = bm.ensure_pgloader()
    runs: dict[str, list[float]] = {"postgres": [], "pgloader": [], "mysql": []}
    tag = uuid.uuid4().hex[:8]
    for rnd in range(rounds):
        order = ["postgres", "pgloader", "mysql"] if rnd % 2 == 0 else ["pgloader", "postgres", "mysql"]
        for what in order:
            if what == "pgloader" and pgloader is None:
                continue
            target = bm.Target("mysql" if what == "mysql" else "postgres", work, f"pmpeers_{tag}_{rnd}_{what}")
            target.create()
            try:
                if what == "pgloader":
                    secs, _, rc, tail, _ = bm.run_pgloader(pgloader, src, target, work)
                else:
                    secs, _, rc, tail, _, data = bm.run_pmigrate(src_cfg, target, work)
                    if rc == 0 and not data.get("sections", {}).get("metadata", {}).get("ok"):
                        rc = -1
            finally:
                target.drop()
            print(f"  metadata {what:<9} round {rnd + 1}: {secs:7.2f}s load {os.getloadavg()[0]:.1f}"
                  f"{'' if rc == 0 else f' FAILED: {tail.strip()[-200:]}'}", flush=True)  # fmt: skip
            if rc == 0:
                runs[what].append(secs)
    med = {k: statistics.median(v) for k, v in runs.items() if v}
    out = []
    for what, secs in med.items():
        tool = "pgloader" if what == "pgloader" else "pmigrate"
        direction = "sqlite3 -> mysql" if what == "mysql" else "sqlite3 -> postgres"
        ratio = float("nan")
        if what == "pgloader" and "postgres" in med:
            ratio = secs / med["postgres"]  # pgloader's time over pmigrate's
        if what == "mysql" and "postgres" in med:
            ratio = med["postgres"] / secs  # mysql rows/s over postgres rows/s
        out.append({"case": "metadata", "tool": f"{tool} {direction}", "workers": "", "scale": "", "rounds": len(runs[what]),
                    "blobs": "", "bytes": "", "rows": rows, "source": how, "seconds": secs, "rows_per_s": rows / secs,
                    "ratio": ratio})  # fmt: skip
    return out


def summary(results: list[dict]) -> list[list]:
    """One line per goal: the figures and whether they reach it."""
    lines = []
    by = {(r["case"], r["tool"]): r for r in results}
    for case, (peer, goal) in GOALS.items():
        pm, other = by.get((case, "pmigrate")), by.get((case, peer))
        if pm and other:
            ratio = other["seconds"] / pm["seconds"]
            lines.append([case, f"{peer} / pmigrate time", _f(pm["seconds"]), _f(other["seconds"]), f"{ratio:.2f}", f">= {goal:.1f}",
                          "yes" if ratio >= goal else "no"])  # fmt: skip
        if case.startswith("one-") and pm:
            lines.append([case, "pmigrate whole command", _f(pm["seconds"]), "", f"{pm['seconds']:.2f} s",
                          f"<= {FIXED_COST_GOAL} s", "yes" if pm["seconds"] <= FIXED_COST_GOAL else "no"])  # fmt: skip
    pg, pgl, my = (by.get(("metadata", t)) for t in ("pmigrate sqlite3 -> postgres", "pgloader sqlite3 -> postgres",
                                                      "pmigrate sqlite3 -> mysql"))  # fmt: skip
    if pg and pgl:
        r = pgl["seconds"] / pg["seconds"]
        lines.append(["metadata", "pgloader / pmigrate time", _f(pg["seconds"]), _f(pgl["seconds"]), f"{r:.2f}", ">= 1.5", "yes" if r >= 1.5 else "no"])
    if pg and my:
        r = pg["seconds"] / my["seconds"]
        what = "rows/s mysql/postgres (s: mysql, postgres)"
        lines.append(["metadata", what, _f(my["seconds"]), _f(pg["seconds"]), f"{r:.2f}", ">= 0.8", "yes" if r >= 0.8 else "no"])
    return lines


def _f(x: float | None) -> str:
    return "-" if x is None or x != x else f"{x:.2f}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--case", default="all", help="comma-separated among " + ", ".join(CASES) + ", or all (default: all)")
    p.add_argument("--scale", type=float, default=1.0, help="size of the mixed and small cases relative to the full one (default: 1)")
    p.add_argument("--rounds", type=int, default=3, help="runs of each tool, alternating (default: 3)")
    p.add_argument("--workers", type=int, default=4, help="pmigrate --workers and rclone --transfers (default: 4)")
    p.add_argument("--metadata-files", type=int, default=1_000_000, help="files of the metadata case's source (default: 1,000,000)")
    p.add_argument("--work", type=Path, default=None, help="scratch folder (default: a new one under /tmp, removed after)")
    args = p.parse_args()
    cases = CASES if args.case == "all" else args.case.split(",")
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        p.error(f"unknown case {unknown[0]!r}: choose among {', '.join(CASES)}, or all")
    if any(c in BLOB_CASES for c in cases) and shutil.which("rclone") is None:
        print("rclone not found: apt-get install rclone", file=sys.stderr)
        return 2
    work = args.work or Path(tempfile.mkdtemp(prefix="pmigrate-peers-"))
    work.mkdir(parents=True, exist_ok=True)
    s3 = bb.S3() if any(BLOB_CASES.get(c, ("", ""))[1] == "s3" for c in cases) else None
    results: list[dict] = []
    load_before = os.getloadavg()
    started = time.perf_counter()
    try:
        bb.compile_pmigrate()
        for case in cases:
            if case == "metadata":
                results += metadata_case(work / "metadata", files=args.metadata_files, rounds=args.rounds)
            else:
                _, rows = blob_case(case, work, scale=args.scale, rounds=args.rounds, workers=args.workers, s3=s3)
                results += rows
            for done in (work / case, work / f"build-{case}"):
                shutil.rmtree(done, ignore_errors=True)
    finally:
        if s3 is not None:
            s3.stop()
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()
    print()
    print(f"{os.cpu_count()} CPUs; load average (1, 5, 15 min) {', '.join(f'{x:.1f}' for x in load_before)} before, "
          f"{', '.join(f'{x:.1f}' for x in load_after)} after; {time.perf_counter() - started:.0f} s in all; "
          f"workers/transfers {args.workers}; median of {args.rounds} rounds; scale {args.scale}")  # fmt: skip
    print_table(["case", "tool", "blobs/rows", "seconds", "linger s", "CPU s", "moto CPU s", "peer/pmigrate"],
                [[r["case"], r["tool"], r.get("blobs") or r.get("rows", ""), _f(r["seconds"]), _f(r.get("linger_s")),
                  _f(r.get("cpu_s")), _f(r.get("server_cpu_s")), _f(r["ratio"])] for r in results])  # fmt: skip
    print("(peer/pmigrate: the peer's seconds over pmigrate's, above 1 when pmigrate is faster; for mysql: its rows/s over postgres's;"
          " linger: seconds from pmigrate's exit until its fork server and resource tracker are gone;"
          " CPU s: user+sys of the tool's process tree; moto CPU s: the S3 server's, on the same 2 CPUs)")  # fmt: skip
    print()
    print_table(["case", "measure", "pmigrate s", "peer s", "figure", "goal", "met"], summary(results))
    write_csv("peers", results, keys=("case", "tool", "workers", "scale"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
