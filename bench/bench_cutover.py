#!/usr/bin/env python3
"""Time a cutover: the full first pass, plikd's churn, then the final pass; file -> file and file -> S3 (moto).

The deployment is made by 'pmigrate fakedb --metadata-only --sizes small':
--files rows in every status. The first --blobs of the rows that hold a blob
get small random bytes (their size and md5 rewritten to match); the others
become 'deleted' rows (plikd's history of files long gone). Each target is a
plikd.cfg with its own SQLite metadata.

Per target: pass 1 copies everything; then the source changes as plikd
changes it: 1% new uploads with one blob each, 0.5% of the files with a blob
set to 'deleted' and their blob removed, 0.2% of the uploads purged (rows
gone, blobs removed); then the final pass with --prune; then `pmigrate
verify`, which must exit 0, and a look at the target: no blob of a deleted
or purged file may remain there. Wall time of each pass, and the parent's
peak RSS (VmHWM of the pmigrate process, read from /proc while it runs).
moto is started here and stopped by its PID.

    .venv/bin/python bench/bench_cutover.py [--files 1000000] [--blobs 200000] [--targets file,s3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.servers import start_moto, stop_process  # noqa: E402

BLOB_STATUSES = ("uploaded", "removed")
_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLIKD_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _blob_path(files: Path, file_id: str) -> Path:
    return files / file_id[:2] / file_id


def make_source(root: Path, *, files: int, blobs: int, seed: int) -> Path:
    """The fakedb deployment, trimmed to ``blobs`` small blobs; returns its plikd.cfg."""
    subprocess.run([sys.executable, "-m", "pmigrate", "fakedb", str(root), "--files", str(files), "--metadata-only",
                    "--sizes", "small", "--seed", str(seed), "-q"], check=True, env=_env())  # fmt: skip
    rng = random.Random(seed)
    store = root / "files"
    con = sqlite3.connect(root / "plik.db")
    try:
        ids = [fid for (fid,) in con.execute(f"SELECT id FROM files WHERE status IN {BLOB_STATUSES} ORDER BY id")]
        keep, drop = ids[:blobs], ids[blobs:]
        con.executemany("UPDATE files SET status = 'deleted' WHERE id = ?", [(i,) for i in drop])
        rows = []
        for fid in keep:
            data = rng.randbytes(rng.randint(200, 2000))
            p = _blob_path(store, fid)
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
            rows.append((len(data), hashlib.md5(data).hexdigest(), fid))
        con.executemany("UPDATE files SET size = ?, md5 = ? WHERE id = ?", rows)
        con.commit()
    finally:
        con.close()
    cfg = root / "plikd.cfg"
    cfg.write_text(f'DataBackend = "file"\n[DataBackendConfig]\n  Directory = "{store}"\n'
                   f'[MetadataBackendConfig]\n  Driver = "sqlite3"\n  ConnectionString = "{root / "plik.db"}"\n')  # fmt: skip
    return cfg


def churn(root: Path, *, seed: int) -> dict[str, int]:
    """As plikd: 1% new uploads with a blob, 0.5% of the files with a blob deleted, 0.2% of the uploads purged."""
    rng = random.Random(f"churn:{seed}")
    store = root / "files"
    con = sqlite3.connect(root / "plik.db")
    try:
        n_files = con.execute("SELECT count(*) FROM files").fetchone()[0]
        n_uploads = con.execute("SELECT count(*) FROM uploads").fetchone()[0]
        with_blob = [fid for (fid,) in con.execute(f"SELECT id FROM files WHERE status IN {BLOB_STATUSES}")]
        uploads = [uid for (uid,) in con.execute("SELECT id FROM uploads")]
        new, gone, purge = n_uploads // 100, n_files // 200, n_uploads // 500
        cols = [r[1] for r in con.execute("PRAGMA table_info(files)")]
        template = dict(zip(cols, con.execute(f"SELECT * FROM files WHERE status IN {BLOB_STATUSES} LIMIT 1").fetchone()))
        ucols = [r[1] for r in con.execute("PRAGMA table_info(uploads)")]
        utemplate = dict(zip(ucols, con.execute("SELECT * FROM uploads LIMIT 1").fetchone()))
        for _ in range(new):
            uid, fid = ("".join(rng.choice(_ALNUM) for _ in range(16)) for _ in range(2))
            data = rng.randbytes(rng.randint(200, 2000))
            p = _blob_path(store, fid)
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
            con.execute(f"INSERT INTO uploads ({', '.join(ucols)}) VALUES ({', '.join('?' * len(ucols))})", [uid if c == "id" else utemplate[c] for c in ucols])
            row = {**template, "id": fid, "upload_id": uid, "status": "uploaded", "size": len(data), "md5": hashlib.md5(data).hexdigest(),
                   "backend_details": ""}  # fmt: skip
            con.execute(f"INSERT INTO files ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", [row[c] for c in cols])
        deleted = rng.sample(with_blob, min(gone, len(with_blob)))
        for fid in deleted:
            _blob_path(store, fid).unlink(missing_ok=True)
        con.executemany("UPDATE files SET status = 'deleted' WHERE id = ?", [(i,) for i in deleted])
        purged = rng.sample(uploads, purge)
        removed = 0
        purged_files: set[str] = set()
        for uid in purged:
            for (fid,) in con.execute("SELECT id FROM files WHERE upload_id = ?", (uid,)).fetchall():
                purged_files.add(fid)
                p = _blob_path(store, fid)
                if p.exists():
                    p.unlink()
                    removed += 1
            con.execute("DELETE FROM files WHERE upload_id = ?", (uid,))
            con.execute("DELETE FROM uploads WHERE id = ?", (uid,))
        con.commit()
    finally:
        con.close()
    gone_ids = set(deleted) | purged_files
    return {"new": new, "deleted": len(deleted), "purged_uploads": purge, "purged_blobs": removed, "gone_ids": gone_ids}


def timed(cmd: list[str], *, log: Path) -> tuple[float, float]:
    """(seconds, parent peak RSS in MiB) of one pmigrate run; exits on failure."""
    started = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=_env(), stdout=out, stderr=subprocess.STDOUT)
        peak = 0
        while proc.poll() is None:
            try:
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]))
            except (FileNotFoundError, ProcessLookupError):
                pass
            time.sleep(0.1)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"exit {proc.returncode}: {' '.join(cmd)} (see {log})")
    return seconds, peak / 1024


def left_behind(kind: str, target: Path, gone: set[str], *, moto: object, bucket: str) -> int:
    """Blobs of deleted or purged files still on the target store."""
    if kind == "file":
        return sum(_blob_path(target / "files", fid).exists() for fid in gone)
    client = moto.client()  # type: ignore[attr-defined]
    keys = {o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket) for o in page.get("Contents", [])}
    return len(keys & gone)


def one_target(kind: str, *, src_cfg: Path, work: Path, seed: int, moto: object, workers: int) -> dict:
    target = work / f"target-{kind}"
    target.mkdir()
    meta = f'[MetadataBackendConfig]\n  Driver = "sqlite3"\n  ConnectionString = "{target / "plik.db"}"\n'
    bucket = ""
    if kind == "file":
        data = f'DataBackend = "file"\n[DataBackendConfig]\n  Directory = "{target / "files"}"\n'
    else:
        bucket = moto.new_bucket()  # type: ignore[attr-defined]
        data = moto.toml(bucket)  # type: ignore[attr-defined]
    cfg = target / "target.cfg"
    cfg.write_text(data + meta)
    base = [sys.executable, "-m", "pmigrate", "--config", str(src_cfg), "--to", str(cfg), "-q", "--workers", str(workers)]
    first, rss1 = timed([*base, "--json", str(target / "pass1.json")], log=target / "pass1.log")
    changes = churn(src_cfg.parent, seed=seed)
    gone = changes.pop("gone_ids")
    final, rss2 = timed([*base, "--prune", "--json", str(target / "final.json")], log=target / "final.log")
    doc = json.loads((target / "final.json").read_text())["sections"]["data"]
    verify, _ = timed([sys.executable, "-m", "pmigrate", "verify", "--config", str(src_cfg), "--to", str(cfg), "-q",
                       "--workers", str(workers)], log=target / "verify.log")  # fmt: skip
    return {"target": kind, "pass1": first, "final": final, "ratio": final / first, "rss1": rss1, "rss2": rss2,
            "copied": doc["copied"], "trusted": doc.get("trusted", 0), "pruned": doc.get("pruned", 0), "verify": verify,
            "left": left_behind(kind, target, gone, moto=moto, bucket=bucket), **changes}  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=1_000_000, help="file rows (default: %(default)s)")
    p.add_argument("--blobs", type=int, default=200_000, help="small blobs among them (default: %(default)s)")
    p.add_argument("--targets", default="file,s3", help="file, s3 or both (default: %(default)s)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="pmigrate --workers (default: the CPUs)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "out", help="parent of the run folder (default: bench/out)")
    p.add_argument("--keep", action="store_true", help="keep the deployments (default: removed)")
    args = p.parse_args()
    work = args.out / f"cutover-{time.strftime('%Y%m%d-%H%M%S')}"
    work.mkdir(parents=True)
    moto_proc = moto = None
    rows = []
    try:
        kinds = [k.strip() for k in args.targets.split(",") if k.strip()]
        if "s3" in kinds:
            moto_proc, moto = start_moto()
        for n, kind in enumerate(kinds):
            # each target starts from the same deployment, before any churn
            src = make_source(work / f"source-{kind}", files=args.files, blobs=args.blobs, seed=args.seed)
            rows.append(one_target(kind, src_cfg=src, work=work, seed=args.seed + n, moto=moto, workers=args.workers))
    finally:
        if moto_proc is not None:
            stop_process(moto_proc)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"cutover: {args.files} file rows, {args.blobs} small blobs, {args.workers} workers, {os.cpu_count()} CPUs;"
          " final pass with --prune, then pmigrate verify (exit 0)")  # fmt: skip
    header = (f"{'target':>6} {'pass 1 s':>9} {'final s':>8} {'ratio':>6} {'copied':>7} {'trusted':>8} {'pruned':>7} {'left':>5} "
              f"{'new':>6} {'deleted':>8} {'purged':>7} {'RSS 1 MiB':>10} {'RSS final':>10} {'verify s':>9}")  # fmt: skip
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['target']:>6} {r['pass1']:>9.1f} {r['final']:>8.1f} {r['ratio']:>6.1%} {r['copied']:>7} {r['trusted']:>8} "
              f"{r['pruned']:>7} {r['left']:>5} {r['new']:>6} {r['deleted']:>8} {r['purged_uploads']:>7} {r['rss1']:>10.0f} "
              f"{r['rss2']:>10.0f} {r['verify']:>9.1f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
