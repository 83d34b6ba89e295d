#!/usr/bin/env python3
"""Blob copy throughput from a local (file) deployment to s3, gcs and swift, by the real CLI.

    .venv/bin/python bench/bench_cloud.py [--rounds 3] [--workers 2] [--out DIR]

One deployment per size profile is made with `pmigrate fakedb` (small: ~4 KiB
blobs; mixed: 0 B to tens of MiB). Each round copies it with
`pmigrate --data-only` to a fresh bucket or container on each store, in a
rotating order (s3, gcs, swift; then gcs, swift, s3; ...), so that load on the
shared machine falls on all three alike. The stores are local stand-ins, each
its own process(es) on loopback: moto (S3), gcp-storage-emulator (GCS, in
memory, single-threaded HTTP/1.0) and a single-node Swift (tempauth, four
servers). Figures therefore compare pmigrate's backends against these
servers on this machine, not the cloud services.

MB/s and files/s are the data stage's own (from --json: bytes and blobs over
its seconds); "wall" is the whole process, Python start-up included. The
medians over the rounds are printed, with the ratio to s3 in the same rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import write_csv  # noqa: E402
from tests.gcs_server import start_gcs  # noqa: E402
from tests.servers import start_moto, stop_process  # noqa: E402
from tests.swift_server import missing_packages, start_swift  # noqa: E402

TARGETS = ("s3", "gcs", "swift")
PROFILES = {"small": 400, "mixed": 120}  # sizes profile -> file rows


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLIKD_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def make_deployment(root: Path, *, sizes: str, files: int) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pmigrate", "fakedb", str(root), "--files", str(files), "--sizes", sizes, "--seed", "5", "-q"],
        env=_env({}),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return root / "plikd.cfg"


class Stores:
    """The three servers, and a fresh target config on each per call."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.moto_proc = None
        self.gcs = None
        self.swift = None

    def start(self) -> None:
        self.moto_proc, self.s3 = start_moto()
        self.gcs = start_gcs()
        reason = missing_packages()
        if reason:
            raise SystemExit(f"Swift cannot run here: {reason}")
        self.swift = start_swift(self.base / "swift")

    def stop(self) -> None:
        if self.swift is not None:
            self.swift.stop()
        if self.gcs is not None:
            self.gcs.stop()
        if self.moto_proc is not None:
            stop_process(self.moto_proc)

    def target(self, kind: str, folder: Path) -> tuple[Path, dict[str, str]]:
        folder.mkdir(parents=True)
        name = f"bench-{uuid.uuid4().hex[:10]}"
        if kind == "s3":
            text = self.s3.toml(name)  # bucket created by the run, as plikd would
            env = {}
        elif kind == "gcs":
            self.gcs.client().create_bucket(name)  # plikd does not create it
            text = self.gcs.toml(name, folder="plik")
            env = self.gcs.env()
        else:
            text = self.swift.toml(name)  # container created by the run, as plikd would
            env = {}
        cfg = folder / "target.cfg"
        cfg.write_text(text + f'[MetadataBackendConfig]\n  Driver = "sqlite3"\n  ConnectionString = "{folder}/unused.db"\n')
        return cfg, env

    def reset_gcs(self) -> None:
        """Drop every emulator bucket: it keeps all data in memory."""
        with urllib.request.urlopen(f"{self.gcs.url}/wipe", timeout=30):
            pass


def one_run(src: Path, target: Path, env: dict[str, str], *, workers: int) -> dict:
    report = target.parent / "report.json"
    cmd = [sys.executable, "-m", "pmigrate", "--config", str(src), "--to", str(target), "--data-only", "-q",
           "--workers", str(workers), "--json", str(report)]  # fmt: skip
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=_env(env), capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"run failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr}")
    data = json.loads(report.read_text())["sections"]["data"]
    return {"bytes": data["bytes"], "blobs": data["copied"], "seconds": data["seconds"], "wall": wall}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3, help="runs per store and profile (default: %(default)s)")
    p.add_argument("--workers", type=int, default=2, help="--workers of every run (default: %(default)s)")
    p.add_argument("--profiles", default="small,mixed", help="fakedb --sizes profiles to run (default: %(default)s)")
    p.add_argument("--out", type=Path, default=None, help="working folder, removed at the end (default: a temporary one)")
    args = p.parse_args()

    base = Path(tempfile.mkdtemp(prefix="bench-cloud-", dir=args.out))
    stores = Stores(base)
    results: dict[tuple[str, str], list[dict]] = {}
    loads = []
    try:
        stores.start()
        for profile in args.profiles.split(","):
            src = make_deployment(base / f"src-{profile}", sizes=profile, files=PROFILES[profile])
            for r in range(args.rounds):
                order = TARGETS[r % 3 :] + TARGETS[: r % 3]
                for kind in order:
                    loads.append(os.getloadavg()[0])
                    cfg, env = stores.target(kind, base / f"run-{profile}-{r}-{kind}")
                    results.setdefault((profile, kind), []).append(one_run(src, cfg, env, workers=args.workers))
                    if kind == "gcs":
                        stores.reset_gcs()
    finally:
        stores.stop()
        shutil.rmtree(base, ignore_errors=True)

    print(f"local (file) -> store, pmigrate --data-only --workers {args.workers}, {args.rounds} round(s), medians")
    print(f"load average during the runs: {min(loads):.1f} to {max(loads):.1f} on {os.cpu_count()} CPUs")
    head = f"{'profile':<8} {'target':<7} {'blobs':>6} {'MiB':>8} {'MB/s':>8} {'files/s':>8} {'wall s':>7} {'vs s3':>6}"
    print(head)
    print("-" * len(head))
    table: list[dict] = []
    for profile in args.profiles.split(","):
        base_rate = None
        for kind in TARGETS:
            runs = results[(profile, kind)]
            mbs = statistics.median(x["bytes"] / x["seconds"] / 1e6 for x in runs)
            fps = statistics.median(x["blobs"] / x["seconds"] for x in runs)
            wall = statistics.median(x["wall"] for x in runs)
            base_rate = base_rate or fps
            print(
                f"{profile:<8} {kind:<7} {runs[0]['blobs']:>6} {runs[0]['bytes'] / 2**20:>8.1f} {mbs:>8.2f} {fps:>8.1f}"
                f" {wall:>7.2f} {fps / base_rate:>6.2f}"
            )
            table.append({"profile": profile, "target": kind, "workers": args.workers, "rounds": len(runs),
                          "blobs": runs[0]["blobs"], "bytes": runs[0]["bytes"], "mb_per_s": mbs, "files_per_s": fps,
                          "wall_s": wall, "vs_s3": fps / base_rate})
    write_csv("cloud", table, keys=("profile", "target", "workers"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
