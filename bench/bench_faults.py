#!/usr/bin/env python3
"""What S3 faults cost a copy: file -> S3 through a fault-injecting proxy, against the same copy without faults.

    .venv/bin/python bench/bench_faults.py [--files 300] [--sizes mixed] [--rates 0,5,10] [--rounds 3] [--workers 2]

One deployment is made with `pmigrate fakedb`. Each round copies it with
`pmigrate --data-only` into a fresh bucket of moto's S3 server, through the
test proxy (tests/s3proxy.py), once per fault rate, in a rotating order (0%,
5%, 10%; then 5%, 10%, 0%; ...) so that load on the shared machine falls on
every rate alike. At a rate of r%, r% of the requests fail, each with one of
500 InternalError, 503 SlowDown, a connection reset before or after the
server acted, or a stall of --stall seconds, drawn uniformly (seeded per
round). The fault-free runs go through the proxy too.

Printed: medians over the rounds of the whole process's wall time, the
requests the server was sent and the faults injected, and the median of the
rounds' ratios to the fault-free run of the same round.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import print_table, write_csv  # noqa: E402
from tests.s3proxy import Proxy, random_faults  # noqa: E402
from tests.servers import start_moto, stop_process  # noqa: E402


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLIKD_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def make_deployment(root: Path, *, sizes: str, files: int) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pmigrate", "fakedb", str(root), "--files", str(files), "--sizes", sizes, "--seed", "5", "-q"],
        env=_env(),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return root / "plikd.cfg"


def one_run(src: Path, folder: Path, proxy: Proxy, s3, *, rate: int, seed: int, stall: float, workers: int, part: int) -> dict:
    folder.mkdir(parents=True)
    cfg = folder / "target.cfg"
    extra = f"  PartSize = {part}\n" if part else ""
    cfg.write_text(s3.toml(f"bench-{uuid.uuid4().hex[:10]}", extra=extra)  # created by the run, as plikd would
                   + f'[MetadataBackendConfig]\n  Driver = "sqlite3"\n  ConnectionString = "{folder}/unused.db"\n')  # fmt: skip
    proxy.clear()
    if rate:
        proxy.add(random_faults(rate / 100, seed=seed, seconds=stall))
    before, faults_before = len(proxy.requests()), len(proxy.acted())
    report = folder / "report.json"
    cmd = [sys.executable, "-m", "pmigrate", "--config", str(src), "--to", str(cfg), "--data-only", "-q",
           "--workers", str(workers), "--json", str(report)]  # fmt: skip
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"run failed ({proc.returncode}) at {rate}% faults: {' '.join(cmd)}\n{proc.stdout}{proc.stderr}")
    data = json.loads(report.read_text())["sections"]["data"]
    return {"wall": wall, "seconds": data["seconds"], "blobs": data["copied"], "bytes": data["bytes"],
            "requests": len(proxy.requests()) - before, "faults": len(proxy.acted()) - faults_before}  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=300, help="fakedb --files (default: %(default)s)")
    p.add_argument("--sizes", default="mixed", help="fakedb --sizes profile (default: %(default)s)")
    p.add_argument("--rates", default="0,5,10", help="fault rates in percent, 0 first (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=3, help="runs per rate (default: %(default)s)")
    p.add_argument("--workers", type=int, default=2, help="--workers of every run (default: %(default)s)")
    p.add_argument("--stall", type=float, default=5.0, help="seconds a stalled request is held (default: %(default)s)")
    p.add_argument("--part-size", type=int, default=0, help="the target's PartSize in bytes (default: plikd's, 16 MiB)")
    p.add_argument("--out", type=Path, default=None, help="working folder, removed at the end (default: a temporary one)")
    args = p.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    if rates[0] != 0:
        raise SystemExit("--rates must start with 0: the ratios are to the fault-free run")

    base = Path(tempfile.mkdtemp(prefix="bench-faults-", dir=args.out))
    moto, s3 = start_moto()
    proxy = Proxy(s3.url).start()
    through = dataclasses.replace(s3, endpoint=proxy.endpoint, url=proxy.url)
    results: dict[int, list[dict]] = {r: [] for r in rates}
    loads = []
    try:
        src = make_deployment(base / "src", sizes=args.sizes, files=args.files)
        for n in range(args.rounds):
            for rate in rates[n % len(rates) :] + rates[: n % len(rates)]:
                loads.append(os.getloadavg()[0])
                run = one_run(src, base / f"run-{n}-{rate}", proxy, through, rate=rate, seed=1000 * n + rate,
                              stall=args.stall, workers=args.workers, part=args.part_size)  # fmt: skip
                results[rate].append(run)
                print(f"round {n + 1}, {rate}% faults: {run['wall']:.1f} s, {run['requests']} requests, {run['faults']} faults",
                      file=sys.stderr)  # fmt: skip
    finally:
        proxy.stop()
        stop_process(moto)
        shutil.rmtree(base, ignore_errors=True)

    clean = results[0]
    first = clean[0]
    print(f"file -> S3 (moto through the fault proxy), {first['blobs']} blobs, {first['bytes'] / 2**20:.1f} MiB, "
          f"--workers {args.workers}, stalls of {args.stall:g} s, {args.rounds} round(s), medians")  # fmt: skip
    print(f"load average during the runs: {min(loads):.1f} to {max(loads):.1f} on {os.cpu_count()} CPUs")
    rows, table = [], []
    for rate in rates:
        runs = results[rate]
        ratio = statistics.median(r["wall"] / c["wall"] for r, c in zip(runs, clean))
        wall = statistics.median(r["wall"] for r in runs)
        requests = statistics.median(r["requests"] for r in runs)
        faults = statistics.median(r["faults"] for r in runs)
        rows.append([f"{rate}%", wall, int(requests), int(faults), f"{ratio:.2f}x"])
        table.append({"rate": rate, "workers": args.workers, "files": args.files, "sizes": args.sizes, "stall_s": args.stall,
                      "rounds": len(runs), "wall_s": wall, "requests": requests, "faults": faults, "vs_clean": ratio})  # fmt: skip
    print_table(["faults", "wall s", "requests", "injected", "vs 0%"], rows)
    write_csv("faults", table, keys=("rate", "workers", "files", "sizes", "stall_s"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
