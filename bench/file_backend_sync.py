"""Why the file backend does not fsync each blob: files/s for small blobs.

A: FileBackend.write, then one sync() (syncfs) per batch of BATCH blobs, as the engine does.
B: the same writes with an fsync of each file (and its directory) before the rename.
Runs alternate A and B, each into a fresh directory; prints files/s and the ratio.

    .venv/bin/python bench/file_backend_sync.py [--files 3000] [--size 4096] [--rounds 3] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from pmigrate.data.base import BlobRef
from pmigrate.data.file import FileBackend

BATCH = 1000


def refs(n: int, size: int) -> list[BlobRef]:
    return [BlobRef(file_id=f"{i:016d}", upload_id="U" * 16, size=size) for i in range(n)]


def run_a(directory: str, data: bytes, rs: list[BlobRef]) -> float:
    b = FileBackend({"Directory": directory})
    b.check(create=True)
    t0 = time.perf_counter()
    for i, ref in enumerate(rs, 1):
        b.write(ref, io.BytesIO(data))
        if i % BATCH == 0:
            b.sync()
    b.sync()
    return time.perf_counter() - t0


def run_b(directory: str, data: bytes, rs: list[BlobRef]) -> float:
    os.makedirs(directory, exist_ok=True)
    t0 = time.perf_counter()
    for ref in rs:
        folder = os.path.join(directory, ref.file_id[:2])
        os.makedirs(folder, exist_ok=True)
        temp = os.path.join(folder, f".{ref.file_id}.partial")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        os.write(fd, data)
        os.fsync(fd)
        os.close(fd)
        os.replace(temp, os.path.join(folder, ref.file_id))
        dfd = os.open(folder, os.O_RDONLY)
        os.fsync(dfd)
        os.close(dfd)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--files", type=int, default=3000)
    p.add_argument("--size", type=int, default=4096)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--dir", default=tempfile.gettempdir())
    args = p.parse_args()
    data = os.urandom(args.size)
    rs = refs(args.files, args.size)
    rows = []
    for r in range(args.rounds):
        for name, fn in (("A syncfs/batch", run_a), ("B fsync/file", run_b)):
            d = tempfile.mkdtemp(prefix="pmbench-", dir=args.dir)
            try:
                secs = fn(os.path.join(d, "files"), data, rs)
            finally:
                shutil.rmtree(d)
            rows.append((r, name, args.files / secs))
    print(f"{args.files} blobs of {args.size} B, batch {BATCH}, dir {args.dir}")
    print(f"{'round':>5}  {'mode':<16} {'files/s':>10}")
    for r, name, rate in rows:
        print(f"{r:>5}  {name:<16} {rate:>10.0f}")
    a = [rate for _, n, rate in rows if n.startswith("A")]
    b = [rate for _, n, rate in rows if n.startswith("B")]
    print(f"median A/B: {sorted(a)[len(a) // 2] / sorted(b)[len(b) // 2]:.1f}x")


if __name__ == "__main__":
    main()
