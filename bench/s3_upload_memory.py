"""Peak memory of one streamed S3 upload, in units of PartSize.

Each run is a fresh process (peak RSS cannot be reset) uploading SIZE bytes
from a non-seekable source to a moto server on loopback, started and stopped
here by its PID. "buffered" sources fill every read (what the engine passes
on from file and s3 sources); "short" sources return 64 KiB per read.

    .venv/bin/python bench/s3_upload_memory.py [--part-mib 8] [--size-mib 160] [--rounds 2]
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)


class Source(io.RawIOBase):
    def __init__(self, n: int) -> None:
        self.left = n
        self.block = b"x" * (1 << 16)

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        k = min(len(buf), self.left, len(self.block))
        buf[:k] = self.block[:k]
        self.left -= k
        return k


def child(endpoint: str, kind: str, part: int, size: int) -> None:
    from pmigrate.data.base import BlobRef
    from pmigrate.data.registry import open_backend

    b = open_backend("s3", {"Endpoint": endpoint, "AccessKeyID": "k", "SecretAccessKey": "secret-key", "Bucket": "bench", "PartSize": part})
    b.check(create=True)
    b.write(BlobRef(file_id="A" * 16, upload_id="B" * 16, size=3), io.BytesIO(b"abc"))  # clients and threads up
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    src = Source(size) if kind == "short" else io.BufferedReader(Source(size), 1 << 20)
    t0 = time.perf_counter()
    b.write(BlobRef(file_id="C" * 16, upload_id="B" * 16, size=size), src)
    secs = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    print(f"{peak / part:.2f} {size / secs / 1e6:.1f}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--part-mib", type=int, default=8)
    p.add_argument("--size-mib", type=int, default=160)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--child", nargs=2)
    args = p.parse_args()
    part, size = args.part_mib << 20, args.size_mib << 20
    if args.child:
        child(args.child[0], args.child[1], part, size)
        return
    from tests.servers import start_moto, stop_process

    proc, server = start_moto()
    rows = []
    try:
        for r in range(args.rounds):
            for kind in ("buffered", "short"):
                out = subprocess.run(
                    [sys.executable, __file__, "--part-mib", str(args.part_mib), "--size-mib", str(args.size_mib), "--child", server.endpoint, kind],
                    capture_output=True, text=True, check=True,
                ).stdout.split()
                rows.append((r, kind, float(out[0]), float(out[1])))
    finally:
        stop_process(proc)
    print(f"one upload of {args.size_mib} MiB, PartSize {args.part_mib} MiB, moto on loopback")
    print(f"{'round':>5}  {'source':<9} {'peak RSS growth / PartSize':>27} {'MB/s':>7}")
    for r, kind, ratio, rate in rows:
        print(f"{r:>5}  {kind:<9} {ratio:>27.2f} {rate:>7.1f}")


if __name__ == "__main__":
    main()
