"""--bwlimit measured: the read rate of a whole pool over a copy of about a minute, against the limit.

Builds a fakedb deployment (file backend, ~1.3 GB of blobs of mixed sizes),
copies its blobs file -> file into a fresh folder with ``--bwlimit RATE``,
and samples the bytes on the target every half second while the run goes
on (temporary names included: they grow as blobs are written). Prints the
rate over the copy, per 10 s window, and its deviation from the limit
(rclone's M is MiB). The generated data is deleted afterwards unless --keep.

    PYTHONPATH=. .venv/bin/python bench/bench_bwlimit.py --rate 20M --workers 4
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import print_table, write_csv  # noqa: E402
from pmigrate.data.bwlimit import parse_rate  # noqa: E402

MiB = 1 << 20
SAMPLE = 0.5  # seconds between looks at the target
WINDOW = 10.0  # seconds per window of the printed rates


def _bytes_under(folder: Path) -> int:
    total = 0
    for dirpath, _dirs, names in os.walk(folder):
        for n in names:
            try:
                total += os.lstat(os.path.join(dirpath, n)).st_size
            except FileNotFoundError:
                pass  # a temporary name renamed meanwhile
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", default="20M", help="--bwlimit of the run (default: 20M)")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--files", type=int, default=7500, help="fakedb file rows (default 7500: ~1.3 GB of blobs)")
    ap.add_argument("--seed", type=int, default=16)
    ap.add_argument("--work", type=Path, default=None, help="folder for the generated data (default: a new one in $TMPDIR)")
    ap.add_argument("--keep", action="store_true", help="keep the generated data")
    args = ap.parse_args()
    rate = parse_rate(args.rate)
    work = Path(tempfile.mkdtemp(prefix="pmigrate-bwlimit-", dir=args.work))
    py = [sys.executable, "-m", "pmigrate"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    try:
        src = work / "src"
        subprocess.run([*py, "fakedb", str(src), "--files", str(args.files), "--seed", str(args.seed), "-q"], check=True, env=env)
        blobs = _bytes_under(src / "files")
        dst = work / "dst"
        dst.mkdir()
        target = dst / "target.cfg"
        target.write_text(f'DataBackend = "file"\n[DataBackendConfig]\n  Directory = "{dst / "files"}"\n')
        report = work / "report.json"
        cmd = [*py, "--config", str(src / "plikd.cfg"), "--to", str(target), "--data-only", "-q", "--workers",
               str(args.workers), "--bwlimit", args.rate, "--json", str(report)]  # fmt: skip
        print(f"{blobs / MiB:,.0f} MiB of blobs; {' '.join(cmd[1:])}")
        samples: list[tuple[float, int]] = []
        proc = subprocess.Popen(cmd, env=env)
        t0 = time.monotonic()
        while proc.poll() is None:
            samples.append((time.monotonic() - t0, _bytes_under(dst / "files")))
            time.sleep(SAMPLE)
        if proc.returncode != 0:
            print(f"pmigrate exited {proc.returncode}", file=sys.stderr)
            return 1
        data = json.loads(report.read_text())["sections"]["data"]
        moving = [(t, b) for t, b in samples if b > 0]
        first, last = moving[0], moving[-1]
        steady = (last[1] - first[1]) / (last[0] - first[0])
        windows = []
        start = first
        for t, b in moving[1:]:
            if t - start[0] >= WINDOW:
                windows.append((f"{start[0]:.0f}-{t:.0f} s", (b - start[1]) / (t - start[0]) / MiB))
                start = (t, b)
        print_table(["window", "MiB/s"], windows)
        overall = data["bytes"] / data["seconds"]
        rows = [
            ("limit", rate / MiB, 0.0),
            ("sampled, first to last byte", steady / MiB, 100 * (steady / rate - 1)),
            ("report: bytes / copy seconds", overall / MiB, 100 * (overall / rate - 1)),
        ]
        print_table(["rate", "MiB/s", "vs limit %"], rows)
        print(f"copied {data['bytes'] / MiB:,.1f} MiB ({data['copied']} blobs) in {data['seconds']:.1f} s "
              f"with {args.workers} workers; min/max 10 s window {min(w for _, w in windows):.2f}/"
              f"{max(w for _, w in windows):.2f} MiB/s")  # fmt: skip
        write_csv("bwlimit", [{"limit": args.rate, "workers": args.workers, "bytes": data["bytes"],
                               "seconds": data["seconds"], "sampled_mib_s": steady / MiB,
                               "report_mib_s": overall / MiB}], keys=["limit", "workers"])  # fmt: skip
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
