#!/usr/bin/env python3
"""The S3 requests each tool makes for the same copy, counted from moto's request log.

    .venv/bin/python bench/s3_requests.py [--case e] [--scale 0.17] [--part-size 5242880] [--workers 4]

Copies one bench_blobs.py deployment (case e: one 4 KiB blob; a: mixed
sizes) from a folder into a new bucket of a moto server on loopback with
pmigrate, rclone and rclone at its fastest, as bench_blobs.py runs them,
and prints per tool how many requests of each kind the server answered
(method, bucket or object, query parameters, status). Requests, not
seconds: every one costs a round trip and the server's work, whatever the
machine's load.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import bench_blobs as bb  # noqa: E402
from tests.servers import S3Server, free_port, stop_process, wait_http  # noqa: E402

LINE = re.compile(r'"(?:\x1b\[[0-9;]*m)*([A-Z]+) (/[^ ?]*)(\?[^ ]*)? HTTP/[0-9.]+(?:\x1b\[[0-9;]*m)*" (\d+)')


class LoggedS3(bb.S3):
    """bench_blobs.S3 with moto's request log kept in a file."""

    def __init__(self, log: Path) -> None:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
        self.log = log
        with open(log, "w") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                         stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tempfile.gettempdir())  # fmt: skip
        try:
            wait_http(f"http://127.0.0.1:{port}/moto-api/", proc=self.proc)
        except Exception:
            stop_process(self.proc)
            raise
        self.server = S3Server(endpoint=f"127.0.0.1:{port}", url=f"http://127.0.0.1:{port}")
        self.start = self.end = 0
        self._emptying = False

    # run_tool makes the bucket and lets moto settle before the tool runs, and
    # empties it after: the tool's requests are those between the two.
    def settle(self, **kw) -> None:
        super().settle(**kw)
        if not self._emptying:
            self.start = self.lines()

    def empty(self, bucket: str) -> None:
        self.end = self.lines()
        self._emptying = True
        try:
            super().empty(bucket)
        finally:
            self._emptying = False

    def lines(self) -> int:
        return len(self.log.read_text(errors="replace").splitlines())

    def requests(self) -> Counter:
        out: Counter = Counter()
        for line in self.log.read_text(errors="replace").splitlines()[self.start : self.end]:
            m = LINE.search(line)
            if not m:
                continue
            method, path, query, status = m.groups()
            keys = sorted(k.split("=")[0] for k in (query or "?")[1:].split("&") if k)
            what = "bucket" if path.strip("/").count("/") == 0 else "object"
            name = path.rsplit("/", 1)[-1]
            if name.startswith(".pmigrate-"):
                what = name.split("-")[0] + "-" + name.split("-")[1].split(".")[0]  # .pmigrate-owner, .pmigrate-probe
            out[f"{method} {what}{' ?' + '&'.join(keys) if keys else ''} -> {status}"] += 1
        return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--case", default="e", help="bench_blobs.py case: a (mixed), b, c, d or e (one 4 KiB blob) (default: e)")
    p.add_argument("--scale", type=float, default=0.17, help="bench_blobs.py --scale for cases a to d (default: 0.17)")
    p.add_argument("--part-size", type=int, default=16 * bb.MiB, help="S3 PartSize and rclone's chunk size (default: 16 MiB)")
    p.add_argument("--workers", type=int, default=4)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pmigrate-requests-"))
    s3 = LoggedS3(work / "moto.log")
    try:
        bb.compile_pmigrate()
        (case,) = bb.build([args.case], work, args.scale)
        print(f"case {args.case}: {case.blobs} blobs, {case.bytes / bb.MiB:.1f} MiB; PartSize {args.part_size}; {args.workers} workers")
        for tool in ("pmigrate", "rclone", "rclone-fast"):
            run = bb.run_tool(tool, case, "s3", work, workers=args.workers, s3=s3, part_size=args.part_size)
            found = s3.requests()
            print()
            print(f"-- {tool}: {sum(found.values())} requests{'' if run.ok else ' (FAILED: ' + run.note + ')'} --")
            for kind, n in sorted(found.items(), key=lambda kv: -kv[1]):
                print(f"  {n:6d}  {kind}")
    finally:
        s3.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
