#!/usr/bin/env python3
"""Blob copy on a Dask cluster (--cluster): throughput against hosts when each host's network link is the limit.

    sudo .venv/bin/python bench/bench_cluster.py [--hosts 1,2,4] [--mbit 40] [--mib 240] [--small 5000] [--rounds 2]

Needs root (network namespaces, veth pairs, tc) and pmigrate[dask].

Scaling: each simulated host is a Linux network namespace running one
`dask worker` (--threads threads), joined to the root namespace by a veth
pair on a private bridge (10.231.0.0/24); the namespace's end of the pair is
capped by tc's token bucket filter at --mbit. The root namespace holds moto
(S3), the Dask scheduler and the pmigrate parent, all on the bridge's address.
The source is a file deployment of --mib MiB in 4 MiB blobs (namespaces share
the file system, as hosts would share an NFS mount); the target a fresh bucket
per run. The upload from each host crosses its capped link: per-host
efficiency is the throughput over hosts x cap.

Overhead: one host, no cap, --small blobs of 4 KiB to S3 on loopback: the
local pool (--workers W) against one dask worker of W processes of one
thread, alternating round by round.

MB/s and blobs/s are the data stage's own (from --json: bytes and blobs over
its seconds, which include handing the plugin to the workers). Medians over
the rounds. Namespaces, links and processes are removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import print_table, write_csv  # noqa: E402
from tests import blobdeploy as bd  # noqa: E402
from tests.servers import S3Server, free_port, stop_process, wait_http  # noqa: E402

MiB = 1 << 20
BRIDGE, NET = "pmbench0", "10.231.0"
ROOT_IP = f"{NET}.1"
KEY = os.urandom(18).hex()


def sh(*args: str) -> None:
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PLIKD_", "DASK_"))}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["PMIGRATE_CLUSTER_KEY"] = KEY
    env.pop("AWS_CA_BUNDLE", None)
    return env


class Network:
    """The bridge in the root namespace, and one namespace per simulated host."""

    def __init__(self, hosts: int, mbit: int) -> None:
        self.hosts = hosts
        self.mbit = mbit
        self.made: list[str] = []

    def ns(self, k: int) -> str:
        return f"pmbench-h{k}"

    def ip(self, k: int) -> str:
        return f"{NET}.{10 + k}"

    def up(self) -> None:
        sh("ip", "link", "add", BRIDGE, "type", "bridge")
        self.made.append("bridge")
        sh("ip", "addr", "add", f"{ROOT_IP}/24", "dev", BRIDGE)
        sh("ip", "link", "set", BRIDGE, "up")
        for k in range(self.hosts):
            ns, a, b = self.ns(k), f"pmbv{k}a", f"pmbv{k}b"
            sh("ip", "netns", "add", ns)
            self.made.append(ns)
            sh("ip", "link", "add", a, "type", "veth", "peer", "name", b)
            sh("ip", "link", "set", b, "netns", ns)
            sh("ip", "link", "set", a, "master", BRIDGE)
            sh("ip", "link", "set", a, "up")
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
            sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{self.ip(k)}/24", "dev", b)
            sh("ip", "netns", "exec", ns, "ip", "link", "set", b, "up")
            # The host's upload (its egress) is what crosses the capped link.
            sh("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", b, "root", "tbf", "rate", f"{self.mbit}mbit",
               "burst", "64kb", "latency", "100ms")  # fmt: skip

    def down(self) -> None:
        for name in reversed(self.made):
            if name == "bridge":
                subprocess.run(["ip", "link", "del", BRIDGE], stderr=subprocess.DEVNULL)
            else:
                subprocess.run(["ip", "netns", "del", name], stderr=subprocess.DEVNULL)  # takes its veth along
        self.made.clear()


class Cluster:
    """moto, a Dask scheduler on the bridge, and the workers of the current case."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.procs: list[subprocess.Popen] = []
        self.workers: list[subprocess.Popen] = []

    def _spawn(self, name: str, args: list[str], *, ns: str | None = None) -> subprocess.Popen:
        prefix = ["ip", "netns", "exec", ns] if ns else []
        with open(self.base / f"{name}.log", "ab") as out:
            return subprocess.Popen(prefix + [sys.executable, "-m", *args], stdout=out, stderr=subprocess.STDOUT,
                                    env=_env(), cwd=self.base)  # fmt: skip

    def start(self) -> None:
        port = free_port()
        self.moto = self._spawn("moto", ["moto.server", "-H", ROOT_IP, "-p", str(port)])
        self.procs.append(self.moto)
        self.s3 = S3Server(endpoint=f"{ROOT_IP}:{port}", url=f"http://{ROOT_IP}:{port}")
        wait_http(f"{self.s3.url}/moto-api/", proc=self.moto)
        sport = free_port()
        self.address = f"tcp://{ROOT_IP}:{sport}"
        self.procs.append(self._spawn("scheduler", ["distributed.cli.dask_scheduler", "--host", ROOT_IP, "--port", str(sport),
                                                    "--no-dashboard"]))  # fmt: skip

    def add_workers(self, n: int, *, host: str, ns: str | None, nworkers: int = 1, threads: int = 1) -> None:
        args = ["distributed.cli.dask_worker", self.address, "--host", host, "--nworkers", str(nworkers), "--nthreads",
                str(threads), "--no-dashboard", "--memory-limit", "0"]  # fmt: skip
        self.workers.append(self._spawn(f"worker-{host}-{len(self.workers)}", args, ns=ns))
        from distributed import Client

        with Client(self.address, timeout=60, set_as_default=False) as client:
            client.wait_for_workers(n, timeout=120)

    def stop_workers(self) -> None:
        for p in self.workers:
            p.send_signal(signal.SIGTERM)
        for p in self.workers:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.workers.clear()
        from distributed import Client

        deadline = time.monotonic() + 30
        with Client(self.address, timeout=60, set_as_default=False) as client:
            while client.nthreads() and time.monotonic() < deadline:
                time.sleep(0.2)

    def reset_s3(self) -> None:
        """moto keeps every object in memory: drop them between runs."""
        req = urllib.request.Request(f"{self.s3.url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(req, timeout=60):
            pass

    def stop(self) -> None:
        if self.workers:
            for p in self.workers:
                stop_process(p)
            self.workers.clear()
        for p in reversed(self.procs):
            stop_process(p)


def one_run(src: Path, target: Path, *extra: str) -> dict:
    report = target.parent / "report.json"
    cmd = [sys.executable, "-m", "pmigrate", "--config", str(src), "--to", str(target), "--data-only", "-q",
           "--json", str(report), *extra]  # fmt: skip
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"run failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr}")
    data = json.loads(report.read_text())["sections"]["data"]
    return {"bytes": data["bytes"], "blobs": data["copied"], "seconds": data["seconds"], "wall": wall}


def target_cfg(folder: Path, s3: S3Server, n: int) -> Path:
    folder.mkdir(parents=True)
    return bd.s3_target(folder, server=s3, bucket=f"bench-{n}-{os.urandom(4).hex()}")  # created by the run


def medians(runs: list[dict]) -> dict:
    return {
        "blobs": runs[0]["blobs"],
        "bytes": runs[0]["bytes"],
        "mb_per_s": statistics.median(r["bytes"] / r["seconds"] / 1e6 for r in runs),
        "blobs_per_s": statistics.median(r["blobs"] / r["seconds"] for r in runs),
        "wall_s": statistics.median(r["wall"] for r in runs),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hosts", default="1,2,4", help="simulated host counts (default: %(default)s)")
    p.add_argument("--mbit", type=int, default=40, help="each host's link, Mbit/s (default: %(default)s)")
    p.add_argument("--mib", type=int, default=240, help="MiB copied in each scaling run, in 4 MiB blobs (default: %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="threads of each host's dask worker (default: %(default)s)")
    p.add_argument("--small", type=int, default=5000, help="blobs of 4 KiB in the overhead case; 0 to skip (default: %(default)s)")
    p.add_argument("--workers", type=int, default=2, help="processes in the overhead case, both ways (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=2, help="runs per case (default: %(default)s)")
    p.add_argument("--out", type=Path, default=None, help="working folder, removed at the end (default: a temporary one)")
    args = p.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_cluster.py needs root: it makes network namespaces and links")
    hosts = [int(h) for h in args.hosts.split(",")]

    base = Path(tempfile.mkdtemp(prefix="bench-cluster-", dir=args.out))
    net = Network(max(hosts), args.mbit)
    cluster = Cluster(base)
    scaling: dict[int, list[dict]] = {}
    overhead: dict[str, list[dict]] = {"local pool": [], "dask": []}
    loads: list[float] = []
    n = 0
    try:
        net.up()
        cluster.start()
        big = bd.file_source(base / "src-big", bd.make_blobs(max(1, args.mib // 4), seed=3, sizes=[4 * MiB]))
        for h in hosts:
            for k in range(h):
                cluster.add_workers(k + 1, host=net.ip(k), ns=net.ns(k), threads=args.threads)
            for _ in range(args.rounds):
                n += 1
                loads.append(os.getloadavg()[0])
                scaling.setdefault(h, []).append(one_run(big.config, target_cfg(base / f"run{n}", cluster.s3, n), "--cluster", cluster.address))
                cluster.reset_s3()
            cluster.stop_workers()
        if args.small:
            small = bd.file_source(base / "src-small", bd.make_blobs(args.small, seed=4, sizes=[4096]))
            cluster.add_workers(args.workers, host=ROOT_IP, ns=None, nworkers=args.workers, threads=1)
            for r in range(args.rounds):
                order = ("local pool", "dask") if r % 2 == 0 else ("dask", "local pool")
                for mode in order:
                    n += 1
                    loads.append(os.getloadavg()[0])
                    extra = ("--cluster", cluster.address) if mode == "dask" else ("--workers", str(args.workers))
                    overhead[mode].append(one_run(small.config, target_cfg(base / f"run{n}", cluster.s3, n), *extra))
                    cluster.reset_s3()
    finally:
        cluster.stop()
        net.down()
        shutil.rmtree(base, ignore_errors=True)

    cap = args.mbit * 1e6 / 8 / 1e6  # MB/s per host
    print(f"file -> S3 (moto) through capped links of {args.mbit} Mbit/s ({cap:.2f} MB/s) per simulated host, "
          f"{args.threads} threads a host, {args.rounds} round(s), medians")  # fmt: skip
    print(f"load average during the runs: {min(loads):.1f} to {max(loads):.1f} on {os.cpu_count()} CPUs")
    rows, table = [], []
    one = None
    for h in hosts:
        m = medians(scaling[h])
        one = one or m["mb_per_s"]
        eff = m["mb_per_s"] / (h * cap)
        rows.append([f"{h} host(s)", m["blobs"], m["bytes"] / MiB, m["mb_per_s"], m["mb_per_s"] / one, eff * 100, m["wall_s"]])
        table.append({"case": "scaling", "hosts": h, "mode": "dask", "mbit": args.mbit, "rounds": len(scaling[h]), **m,
                      "vs_one_host": m["mb_per_s"] / one, "link_efficiency": eff})  # fmt: skip
    print_table(["hosts", "blobs", "MiB", "MB/s", "x 1 host", "% of links", "wall s"], rows)
    if args.small:
        print()
        print(f"one host, no cap: {args.small} blobs of 4 KiB to S3 (moto), {args.workers} processes both ways")
        rows = []
        local = medians(overhead["local pool"])
        for mode in ("local pool", "dask"):
            m = medians(overhead[mode])
            rows.append([mode, m["blobs"], m["blobs_per_s"], m["mb_per_s"], m["blobs_per_s"] / local["blobs_per_s"] * 100, m["wall_s"]])
            table.append({"case": "small", "hosts": 1, "mode": mode, "mbit": 0, "rounds": len(overhead[mode]), **m,
                          "vs_local_pool": m["blobs_per_s"] / local["blobs_per_s"]})  # fmt: skip
        print_table(["mode", "blobs", "blobs/s", "MB/s", "% of local", "wall s"], rows)
    write_csv("cluster", table, keys=("case", "hosts", "mode"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
