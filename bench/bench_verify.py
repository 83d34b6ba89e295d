"""Blob verification throughput against a plain read of the same blobs, local and S3.

    .venv/bin/python bench/bench_verify.py [--files 1000] [--mib 1024] [--workers 2] [--rounds 3] [--no-s3]

Builds one source deployment (a Plik 0011 sqlite database plus blobs of mixed
sizes in a file directory) and faithful targets (copied by pmigrate: a directory, and a bucket
on a moto S3 server started here and stopped by its PID). Then, alternating A
and B in each round, it times:

- A: `pmigrate verify --data-only --workers W` on a target that `pmigrate`
  copied: verify reads each target blob and compares its xxh3-128 with the
  copy journal's. Again with `--journal` pointing elsewhere: then it reads and
  hashes the source blob too. The rate is the bytes it read over its blob
  phase (from the JSON report) and over the whole command (process start,
  row queries and the unowned-object listing included).
- B: a plain read of the same bytes with the same concurrency, hashing
  nothing: `xargs -P W cat > /dev/null` over the same files (local), or W
  processes streaming boto3 get_object bodies in 1 MiB reads (S3).

Both read from the page cache for local files (the same files, read again
every round), so the figures compare CPU work per byte, not the disk. The
ratio A/B is the figure to watch: the target is at least 0.90.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import write_csv  # noqa: E402
from tests import dumps as dumps_mod  # noqa: E402
from tests import verifykit as vk  # noqa: E402
from tests.servers import start_moto, stop_process  # noqa: E402


def make_blobs(n: int, total: int, seed: int = 11) -> list[vk.Blob]:
    """Mixed sizes summing to about `total`: many small, some large."""
    import hashlib

    rng = random.Random(seed)
    weights = [rng.paretovariate(1.2) for _ in range(n)]
    scale = total / sum(weights)
    out = []
    chunk = rng.randbytes(1 << 20)
    for i, w in enumerate(weights):
        size = max(1, int(w * scale))
        data = (chunk * (size // len(chunk) + 1))[:size] if size > len(chunk) else chunk[:size]
        data = i.to_bytes(8, "big") + data[8:]  # distinct blobs
        out.append(vk.Blob(file_id=f"BV{i:014d}", data=data, md5=hashlib.md5(data).hexdigest()))
    return out


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO)
    for k in list(e):
        if k.startswith("PLIKD_"):
            del e[k]
    return e


def cpu() -> float:
    """CPU seconds (user + system) of every finished child process, grandchildren included."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_verify(src_cfg: Path, dst_cfg: Path, workers: int, out: Path, *extra: str) -> tuple[float, dict]:
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pmigrate", "verify", "--config", str(src_cfg), "--to", str(dst_cfg), "--data-only",
         "--workers", str(workers), "-q", "--json", str(out), *extra],
        env=env(), capture_output=True, text=True,
    )  # fmt: skip
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"verify failed:\n{proc.stdout}\n{proc.stderr}")
    return wall, json.loads(out.read_text())["sections"]["verify-blobs"]


def copy(src_cfg: Path, dst_cfg: Path, workers: int) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pmigrate", "--config", str(src_cfg), "--to", str(dst_cfg), "--data-only", "--workers", str(workers), "-q"],
        env=env(), capture_output=True, text=True,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"copy failed:\n{proc.stdout}\n{proc.stderr}")


def cat_files(paths: list[Path], workers: int) -> float:
    t = time.perf_counter()
    subprocess.run(
        ["xargs", "-0", "-P", str(workers), "-n", "64", "cat"],
        input=b"\0".join(str(p).encode() for p in paths), stdout=subprocess.DEVNULL, check=True,
    )  # fmt: skip
    return time.perf_counter() - t


def _s3_read(args: tuple[str, str, str, str, list[str]]) -> int:
    import boto3

    url, ak, sk, bucket, keys = args
    c = boto3.client("s3", endpoint_url=url, aws_access_key_id=ak, aws_secret_access_key=sk, region_name="us-east-1")
    n = 0
    for k in keys:
        body = c.get_object(Bucket=bucket, Key=k)["Body"]
        while True:
            b = body.read(1 << 20)
            if not b:
                break
            n += len(b)
    return n


def s3_read(s3, bucket: str, keys: list[str], workers: int, pool: ProcessPoolExecutor) -> float:
    parts = [keys[i::workers] for i in range(workers)]
    t = time.perf_counter()
    list(pool.map(_s3_read, [(s3.url, s3.access_key, s3.secret_key, bucket, p) for p in parts]))
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--mib", type=int, default=1024, help="total size of the blobs")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-s3", action="store_true")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-verify-"))
    try:
        run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path) -> None:
    items = make_blobs(args.files, args.mib << 20)
    total = sum(len(b.data) for b in items)
    dump = dumps_mod.dumps_dir() / "sqlite3" / "0011-stats.sqlite3.dump"
    dbs = {}
    for side in ("src", "dst"):
        (work / f"{side}-db").mkdir()
        dbs[side] = dumps_mod.load_dump(dump, tmp_dir=work / f"{side}-db")
        vk.add_file_rows(dbs[side].url, items)
    vk.write_file_blobs(work / "src-files", items)
    src_cfg = vk.file_cfg(work / "src.cfg", db=dbs["src"], directory=work / "src-files")
    dst_cfg = vk.file_cfg(work / "dst.cfg", db=dbs["dst"], directory=work / "dst-files")
    copy(src_cfg, dst_cfg, args.workers)  # the target and its journal, as pmigrate makes them
    src_paths = [work / "src-files" / b.file_id[:2] / b.file_id for b in items]
    dst_paths = [work / "dst-files" / b.file_id[:2] / b.file_id for b in items]
    no_journal = ("--journal", str(work / "absent-journal.db"))
    print(f"{len(items)} blobs, {total / 2**20:.0f} MiB, workers {args.workers}, rounds {args.rounds}; work dir {work}")

    res: dict[str, list[tuple[float, ...]]] = {}

    def record(case: str, phase_s: float, wall_s: float, plain_s: float, nbytes: int, cpu_a: float, cpu_b: float) -> None:
        gb = nbytes / 1e9
        res.setdefault(case, []).append(
            (nbytes / phase_s / 1e6, nbytes / wall_s / 1e6, nbytes / plain_s / 1e6, cpu_a / gb, cpu_b / gb)
        )

    def timed(fn, *a):
        c = cpu()
        v = fn(*a)
        return v, cpu() - c

    out = work / "report.json"
    for _ in range(args.rounds):
        (wall, s), ca = timed(run_verify, src_cfg, dst_cfg, args.workers, out)
        assert s["ok"] == len(items) and s["bytes_read"] == total, s
        plain, cb = timed(cat_files, dst_paths, args.workers)
        record("local, journal: target read", s["seconds"], wall, plain, total, ca, cb)
        plain, cb = timed(cat_files, src_paths + dst_paths, args.workers)
        (wall, s), ca = timed(run_verify, src_cfg, dst_cfg, args.workers, out, *no_journal)
        assert s["ok"] == len(items) and s["bytes_read"] == 2 * total, s
        record("local, no journal: target + source read", s["seconds"], wall, plain, 2 * total, ca, cb)

    moto = None
    if not args.no_s3:
        moto, s3 = start_moto()
        try:
            bucket = s3.new_bucket("bench")
            s3_cfg = vk.s3_cfg(work / "s3.cfg", db=dbs["dst"], s3=s3, bucket=bucket)
            copy(src_cfg, s3_cfg, args.workers)
            keys = [b.file_id for b in items]
            with ProcessPoolExecutor(args.workers) as pool:
                for _ in range(args.rounds):
                    plain = s3_read(s3, bucket, keys, args.workers, pool)
                    wall, s = run_verify(src_cfg, s3_cfg, args.workers, out)
                    assert s["ok"] == len(items) and s["bytes_read"] == total, s
                    record("s3, journal: target read", s["seconds"], wall, plain, total, float("nan"), float("nan"))
                    wall, s = run_verify(src_cfg, s3_cfg, args.workers, out, "--checksum", "md5")
                    assert s["ok"] == len(items) and s["verified_by_etag"] > 0, s  # multipart objects are read
                    etag_share = f"{s['verified_by_etag']}/{len(items)}"
                    res.setdefault(f"s3 --checksum md5, {etag_share} by ETag (files/s)", []).append(
                        (len(items) / s["seconds"], len(items) / wall, float("nan"), float("nan"), float("nan"))
                    )
        finally:
            stop_process(moto)

    table: list[dict] = []
    print(f"\n{'case':44} {'verify MB/s':>12} {'(whole cmd)':>12} {'plain MB/s':>11} {'ratio':>6} {'CPU s/GB verify':>16} {'plain':>6}")
    for case, vals in res.items():
        n = len(vals)
        a, w, b, ca, cb = (sorted(v[i] for v in vals)[n // 2] for i in range(5))
        ratio = f"{a / b:6.2f}" if b == b else "     -"
        cpus = f"{ca:16.2f} {cb:6.2f}" if ca == ca else f"{'-':>16} {'-':>6}"
        print(f"{case:44} {a:12.1f} {w:12.1f} {b:11.1f} {ratio} {cpus}")
        table.append({"case": case.strip(), "files": args.files, "mib": args.mib, "workers": args.workers, "rounds": n,
                      "verify": a, "verify_whole_command": w, "plain": b, "ratio": a / b if b == b else float("nan"),
                      "cpu_s_per_gb_verify": ca, "cpu_s_per_gb_plain": cb,
                      "unit": "files/s" if "files/s" in case else "MB/s"})  # fmt: skip
    print("(medians of the rounds; ratio = verify blob phase / plain read; CPU: user+system of all processes, whole command)")
    write_csv("verify", table, keys=("case", "workers", "files", "mib"))


if __name__ == "__main__":
    main()
