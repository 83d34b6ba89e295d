#!/usr/bin/env python3
"""Blob copy benchmark: pmigrate against `cp -r` and `rclone copy`, local->local and local->S3.

Cases, on fake Plik deployments:
  a  about 1 GiB of mixed sizes     (pmigrate fakedb --sizes mixed)
  b  20,000 blobs of about 4 KiB    (pmigrate fakedb --sizes small)
  c  one 1 GiB blob
  d  5,000 blobs of about 4 KiB     (as b)
  e  one blob of 4 KiB: the whole command's fixed cost
--scale shrinks a to d (e.g. --scale 0.05 for a quick run).

Each case runs pmigrate, cp -r and cp -r + sync (local only; pmigrate
makes every blob durable with syncfs before its journal says done, cp does
not), rclone at its defaults and rclone at its fastest ("rclone-fast",
RCLONE_FAST_*: the flags rclone's documentation gives for fewer requests and
less checking) at the same
concurrency (--workers N = --transfers N), alternating tools round by round,
each run into a fresh directory or bucket; after a bucket is emptied, the
next run waits for moto to be idle. Local run directories are removed
only when the script ends: on ext4 here, creating many files right after
deleting many is slow, and would charge one tool for the previous one's
clean-up. The S3 side is a moto server on
loopback, started and stopped here by its PID; every run gets a new bucket,
created before the clock starts (so that rclone-fast may skip checking it).
Printed per tool: median seconds, MB/s, files/s and peak RSS of the whole
process tree (parent, forkserver, workers), and pmigrate's ratios to the
others. Seconds run from the start of the command to the exit of its
process, as a shell's `time` sees it; pmigrate's fork server and resource
tracker end a little after (the "linger" of each run, printed per round),
and the next run starts only once they are gone. pmigrate's modules are
byte-compiled first, as an installed package is.

    .venv/bin/python bench/bench_blobs.py --scale 0.1 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import write_csv  # noqa: E402
from tests.servers import start_moto, stop_process  # noqa: E402

MiB = 1 << 20
GiB = 1 << 30
PY = sys.executable

# rclone at its fastest, from rclone 1.60's own documentation (rclone help flags; "Reducing costs" in its S3 page):
RCLONE_FAST_COMMON = [
    "--no-check-dest",  # don't list or check the destination: copy every file (the target is new)
    "--ignore-checksum",  # skip the post-copy check of checksums
    "--local-no-check-updated",  # don't check that source files change during the copy
]
RCLONE_FAST_S3 = [
    "--s3-no-head",  # no HEAD of each uploaded object to check it
    "--s3-no-check-bucket",  # don't check or create the bucket (made before the clock starts)
    "--s3-disable-checksum",  # no MD5 of a multipart object's source before its upload
]
RCLONE_FAST_LOCAL = [
    "--local-no-preallocate",  # no fallocate of each target file
]


# -- measuring ---------------------------------------------------------------------


def _tree(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [pid], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in bytes; PSS shares pages between the processes mapping them."""
    rss = pss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("Pss:"):
                pss = int(line.split()[1]) * 1024
    except OSError:
        pass
    return rss, pss


@dataclass
class Run:
    seconds: float  # from the start of the command to the exit of its process
    peak_rss: int  # peak of the summed RSS of the process tree (shared pages counted in every process)
    ok: bool
    note: str = ""
    peak_pss: int = 0  # peak of the summed PSS (shared pages counted once)
    cpu: float = 0.0  # user + system seconds of the whole tree
    linger: float = 0.0  # seconds from its exit until the last process of its tree was gone
    server_cpu: float = 0.0  # user + system seconds of the S3 server (moto) during the run, if any


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first), or None once the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _gone(pid: int) -> bool:
    fields = _stat(pid)
    return fields is None or fields[0] == "Z"


def _ticks(pid: int) -> int | None:
    """utime + stime of a process, in clock ticks."""
    fields = _stat(pid)
    return int(fields[11]) + int(fields[12]) if fields else None


def timed(cmd: list[str], *, env: dict | None = None) -> Run:
    """Run a command; wall time to its exit, CPU time and the peak summed RSS and PSS of its process tree.

    Its output goes to a file, not a pipe: reading a pipe to its end would
    also wait for the children that inherited it and outlive the command.
    """
    peak = peak_pss = 0
    stop = threading.Event()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    err_file = tempfile.TemporaryFile()
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err_file)

    ticks: dict[int, int] = {}  # pid -> utime + stime last seen: workers are not reaped by us

    def sample() -> None:
        nonlocal peak, peak_pss
        while not stop.is_set():
            tree = _tree(proc.pid)
            mem = [_memory(p) for p in tree]
            peak = max(peak, sum(m[0] for m in mem))
            peak_pss = max(peak_pss, sum(m[1] for m in mem))
            for p in tree:
                ticks[p] = _ticks(p) or ticks.get(p, 0)
            stop.wait(0.02)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    proc.wait()
    seconds = time.perf_counter() - started
    stop.set()
    t.join()
    # Its children (pmigrate's fork server and resource tracker) end once
    # they see it gone: the next run waits for them, and their CPU counts.
    while not all(_gone(p) for p in ticks if p != proc.pid) and time.perf_counter() - started - seconds < 30:
        for p in list(ticks):
            ticks[p] = _ticks(p) or ticks[p]
        time.sleep(0.005)
    linger = time.perf_counter() - started - seconds
    # rusage counts only descendants reaped along a chain of waits; pmigrate's
    # workers hang off a fork server nobody waits for, hence the sampled ticks.
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = max((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
              sum(ticks.values()) / os.sysconf("SC_CLK_TCK"))  # fmt: skip
    err_file.seek(0)
    err = err_file.read().decode(errors="replace")
    err_file.close()
    ok = proc.returncode == 0
    return Run(seconds, peak, ok, "" if ok else err.strip()[-300:], peak_pss, cpu, linger)


# -- deployments ------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    src: Path  # folder with plikd.cfg, plik.db, files/
    blobs: int = 0
    bytes: int = 0


def _fakedb(out: Path, *, files: int, sizes: str) -> None:
    subprocess.run([PY, "-m", "pmigrate", "fakedb", str(out), "--files", str(files), "--sizes", sizes, "--seed", "7", "-q"],
                   check=True, cwd=REPO, env=_env())  # fmt: skip


def _one_blob(out: Path, size: int) -> None:
    """A deployment holding one blob of `size` bytes (fakedb's sizes stop below 1 GiB)."""
    from tests import blobdeploy as bd

    out.mkdir(parents=True)
    fid, uid = "BigBlob000000001", "BigUpload0000001"
    path = out / "files" / fid[:2] / fid
    path.parent.mkdir(parents=True)
    rng = random.Random(3)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 64 * MiB)
            f.write(rng.randbytes(n))
            left -= n
    blob = bd.Blob(fid, uid, b"", size=size)
    bd.create_db(out / "plik.db", [blob])
    (out / "plikd.cfg").write_text(bd.file_toml(out / "files") + bd.meta_toml(out / "plik.db"))


def _measure(case: Case) -> None:
    con = sqlite3.connect(case.src / "plik.db")
    try:
        case.blobs, case.bytes = con.execute(
            "SELECT count(*), coalesce(sum(size), 0) FROM files WHERE status IN ('uploaded', 'removed')"
        ).fetchone()
    finally:
        con.close()


def build(cases: list[str], root: Path, scale: float) -> list[Case]:
    out = []
    for name in cases:
        src = root / f"src-{name}"
        if name == "a":
            _fakedb(src, files=max(20, int(6_250 * scale)), sizes="mixed")
        elif name == "b":
            _fakedb(src, files=max(20, int(23_300 * scale)), sizes="small")
        elif name == "c":
            _one_blob(src, max(MiB, int(GiB * scale)))
        elif name == "d":
            _fakedb(src, files=max(20, int(5_825 * scale)), sizes="small")
        elif name == "e":
            _one_blob(src, 4096)
        case = Case(name, src)
        _measure(case)
        out.append(case)
    return out


# -- tools ---------------------------------------------------------------------------------


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLIKD_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


class S3:
    def __init__(self) -> None:
        self.proc, self.server = start_moto()

    def rclone_env(self) -> dict:
        env = _env(
            RCLONE_CONFIG_MOTO_TYPE="s3",
            RCLONE_CONFIG_MOTO_PROVIDER="Other",
            RCLONE_CONFIG_MOTO_ACCESS_KEY_ID=self.server.access_key,
            RCLONE_CONFIG_MOTO_SECRET_ACCESS_KEY=self.server.secret_key,
            RCLONE_CONFIG_MOTO_ENDPOINT=self.server.url,
            RCLONE_CONFIG_MOTO_REGION=self.server.region,
        )
        env.pop("AWS_CA_BUNDLE", None)
        return env

    def empty(self, bucket: str) -> None:
        """Delete a bucket and its objects: moto keeps everything in memory."""
        client = self.server.client()
        try:
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                for i in range(0, len(keys), 1000):
                    client.delete_objects(Bucket=bucket, Delete={"Objects": keys[i : i + 1000]})
            client.delete_bucket(Bucket=bucket)
        except Exception:  # noqa: BLE001 - a bucket never created
            pass
        self.settle()

    def settle(self, *, quiet: float = 0.5, limit: float = 60.0) -> None:
        """Wait until moto has used no CPU for `quiet` seconds.

        After a deletion moto goes on freeing objects and closing their spooled
        files for seconds: the next tool timed would pay for the previous one.
        """
        ticks = Path(f"/proc/{self.proc.pid}/stat")
        deadline = time.monotonic() + limit
        last, since = None, time.monotonic()
        while time.monotonic() < deadline:
            try:
                fields = ticks.read_text().rsplit(")", 1)[1].split()
            except OSError:
                return
            used = int(fields[11]) + int(fields[12])
            if used != last:
                last, since = used, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return
            time.sleep(0.05)

    def cpu(self) -> float:
        """user + system seconds moto has used so far: on this machine it shares the CPUs with the tool it serves."""
        return (_ticks(self.proc.pid) or 0) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        stop_process(self.proc)


def run_tool(tool: str, case: Case, target: str, work: Path, *, workers: int, s3: S3 | None, part_size: int = 16 * MiB) -> Run:
    """One run into a fresh place; a bucket is emptied afterwards, a folder is left for the end."""
    dest = work / f"{tool}-{uuid.uuid4().hex[:8]}"
    dest.mkdir(parents=True)
    bucket = f"bench-{uuid.uuid4().hex[:12]}"
    if target == "s3":
        assert s3 is not None
        s3.server.client().create_bucket(Bucket=bucket)
        s3.settle()
    try:
        cmd, env = _command(tool, case, target, dest, bucket, workers=workers, s3=s3, part_size=part_size)
        server_before = s3.cpu() if target == "s3" and s3 is not None else 0.0
        run = timed(cmd, env=env)
        if target == "s3" and s3 is not None:
            run.server_cpu = s3.cpu() - server_before
        if tool == "pmigrate" and run.ok:
            data = json.loads((dest / "report.json").read_text())["sections"]["data"]
            if data["copied"] != case.blobs:
                run.ok, run.note = False, f"copied {data['copied']} of {case.blobs}"
        return run
    finally:
        if target == "s3":
            shutil.rmtree(dest, ignore_errors=True)  # a target config and a journal: a handful of files
        if target == "s3" and s3 is not None:
            s3.empty(bucket)


def _command(tool: str, case: Case, target: str, dest: Path, bucket: str, *, workers: int, s3: S3 | None,
             part_size: int) -> tuple[list[str], dict | None]:  # fmt: skip
    """The command line and environment of one tool's run into ``dest`` (a folder) or ``bucket``."""
    if tool == "pmigrate":
        cfg = dest / "target.cfg"
        if target == "local":
            cfg.write_text(f'DataBackend = "file"\n[DataBackendConfig]\n  Directory = "{dest / "files"}"\n')
        else:
            assert s3 is not None
            cfg.write_text(s3.server.toml(bucket, extra=f"  PartSize = {part_size}\n"))
        return [PY, "-m", "pmigrate", "--config", str(case.src / "plikd.cfg"), "--to", str(cfg), "--data-only", "-q",
                "--workers", str(workers), "--journal", str(dest / "journal.db"), "--json", str(dest / "report.json")], _env()  # fmt: skip
    if tool == "cp":
        return ["cp", "-r", str(case.src / "files"), str(dest / "files")], None
    if tool == "cp+sync":  # cp -r made durable, as pmigrate's syncfs per journal batch makes it
        return ["sh", "-c", 'cp -r "$1" "$2" && sync -f "$2"', "sh", str(case.src / "files"), str(dest / "files")], None
    if tool in ("rclone", "rclone-fast"):
        fast = tool == "rclone-fast"
        common = ["--transfers", str(workers), "--checkers", str(max(8, workers)), "-q", *(RCLONE_FAST_COMMON if fast else [])]
        if target == "local":
            return ["rclone", "copy", str(case.src / "files"), str(dest / "files"), *common, *(RCLONE_FAST_LOCAL if fast else [])], _env()
        assert s3 is not None
        part = f"{part_size // 1024}Ki"  # pmigrate's multipart threshold and part size are both PartSize
        return ["rclone", "copy", str(case.src / "files"), f"moto:{bucket}", *common,
                "--s3-chunk-size", part, "--s3-upload-cutoff", part, "--s3-upload-concurrency", "4",
                *(RCLONE_FAST_S3 if fast else [])], s3.rclone_env()  # fmt: skip
    raise ValueError(tool)


# -- report ----------------------------------------------------------------------------------


LABELS = {"a": "a mixed", "b": "b small", "c": "c one blob", "d": "d small", "e": "e one 4K"}
TOOLS = {"local": ["pmigrate", "cp", "cp+sync", "rclone", "rclone-fast"], "s3": ["pmigrate", "rclone", "rclone-fast"]}


@dataclass
class Row:
    case: Case
    target: str
    runs: dict[str, list[Run]] = field(default_factory=dict)
    part_size: int = 16 * MiB  # S3 PartSize of the target (plikd's default); the file backend's buffer is 1 MiB

    def median(self, tool: str) -> float | None:
        ok = [r.seconds for r in self.runs.get(tool, []) if r.ok]
        return statistics.median(ok) if ok else None

    def peak(self, tool: str) -> int:
        return max((r.peak_rss for r in self.runs.get(tool, [])), default=0)

    def peak_pss(self, tool: str) -> int:
        return max((r.peak_pss for r in self.runs.get(tool, [])), default=0)

    def cpu(self, tool: str) -> float:
        ok = [r.cpu for r in self.runs.get(tool, []) if r.ok]
        return statistics.median(ok) if ok else 0.0

    def server_cpu(self, tool: str) -> float:
        ok = [r.server_cpu for r in self.runs.get(tool, []) if r.ok]
        return statistics.median(ok) if ok else 0.0


def print_table(rows: list[Row], *, workers: int) -> None:
    print()
    print(f"workers/transfers = {workers}; median of rounds; MB = 10^6 bytes; RSS/PSS = peak of the sum over the "
          "process tree (PSS counts pages shared by processes once); CPU = user+sys seconds of the tree")  # fmt: skip
    head = (f"{'case':<26} {'target':<6} {'tool':<11} {'seconds':>8} {'MB/s':>8} {'files/s':>9} {'CPU s':>7} "
            f"{'RSS MiB':>8} {'PSS MiB':>8}  vs pmigrate")  # fmt: skip
    print(head)
    print("-" * len(head))
    for row in rows:
        c = row.case
        label = LABELS.get(c.name, c.name) + f" {c.blobs}f {c.bytes / MiB:.0f}MiB"
        pm = row.median("pmigrate")
        for tool in row.runs:
            med = row.median(tool)
            if med is None:
                notes = "; ".join(r.note for r in row.runs[tool] if not r.ok)
                print(f"{label:<26} {row.target:<6} {tool:<11} {'FAILED':>8}  {notes[:120]}")
                continue
            ratio = f"pmigrate = {med / pm:.2f}x its speed" if pm and tool != "pmigrate" else ""
            if tool == "pmigrate":
                budget = workers * 2 * row.part_size + 100e6
                ratio = f"budget {budget / MiB:.0f} MiB (workers x 2 x PartSize + 100 MB)"
            print(f"{label:<26} {row.target:<6} {tool:<11} {med:8.2f} {c.bytes / med / 1e6:8.1f} {c.blobs / med:9.0f} "
                  f"{row.cpu(tool):7.1f} {row.peak(tool) / MiB:8.0f} {row.peak_pss(tool) / MiB:8.0f}  {ratio}")  # fmt: skip
    print()


def csv_rows(rows: list[Row], *, workers: int, scale: float) -> list[dict]:
    """The printed table's figures, one dict per case, target and tool, for bench/results/blobs.csv."""
    out = []
    for row in rows:
        c = row.case
        for tool in row.runs:
            med = row.median(tool)
            if med is not None:
                out.append({"case": c.name, "target": row.target, "tool": tool, "workers": workers, "scale": scale,
                            "rounds": sum(r.ok for r in row.runs[tool]), "blobs": c.blobs, "bytes": c.bytes, "seconds": med,
                            "mb_per_s": c.bytes / med / 1e6, "files_per_s": c.blobs / med, "rss_mib": row.peak(tool) / MiB,
                            "pss_mib": row.peak_pss(tool) / MiB, "cpu_s": row.cpu(tool), "part_size": row.part_size,
                            "server_cpu_s": row.server_cpu(tool) if row.target == "s3" else ""})
    return out


def compile_pmigrate() -> None:
    """Byte-compile pmigrate as pip does on install, so that no timed run compiles it (PYTHONDONTWRITEBYTECODE or not)."""
    subprocess.run([PY, "-m", "compileall", "-q", str(REPO / "pmigrate")], check=True, stdout=subprocess.DEVNULL)


def measure_row(case: Case, target: str, tools: list[str], work: Path, *, rounds: int, workers: int, s3: S3 | None,
                part_size: int = 16 * MiB, tag: str = "") -> Row:
    """Every tool on one case and target, alternating the order round by round."""
    row = Row(case, target, {t: [] for t in tools}, part_size=part_size)
    for rnd in range(rounds):
        order = tools if rnd % 2 == 0 else list(reversed(tools))
        for tool in order:
            run = run_tool(tool, case, target, work, workers=workers, s3=s3, part_size=part_size)
            row.runs[tool].append(run)
            server = f" moto cpu {run.server_cpu:5.1f}s" if target == "s3" else ""
            print(f"  {tag or case.name} {target:<5} {tool:<11} round {rnd + 1}: {run.seconds:7.2f}s (+{run.linger:.2f}s linger) "
                  f"cpu {run.cpu:6.1f}s{server} rss {run.peak_rss / MiB:6.0f} MiB pss {run.peak_pss / MiB:6.0f} MiB "
                  f"load {os.getloadavg()[0]:.1f} {'' if run.ok else 'FAILED ' + run.note}", flush=True)  # fmt: skip
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=float, default=1.0, help="size of every case relative to the full one (default: 1)")
    p.add_argument("--workers", type=int, default=4, help="pmigrate --workers and rclone --transfers (default: 4)")
    p.add_argument("--rounds", type=int, default=3, help="runs of each tool, alternating (default: 3)")
    p.add_argument("--cases", default="a,b,c", help="comma-separated among a,b,c,d,e (default: a,b,c)")
    p.add_argument("--targets", default="local,s3", help="comma-separated among local,s3 (default: both)")
    p.add_argument("--tools", default="", help="comma-separated subset of " + ",".join(TOOLS["local"]) + " (default: all for the target)")
    p.add_argument("--part-size", type=int, default=16 * MiB, help="S3 PartSize in bytes, and rclone's chunk size and cutoff (default: 16 MiB)")
    p.add_argument("--work", type=Path, default=None, help="scratch folder (default: a new one under /tmp, removed after)")
    args = p.parse_args()
    if shutil.which("rclone") is None:
        print("rclone not found: apt-get install rclone", file=sys.stderr)
        return 2
    work = args.work or Path(f"/tmp/pmigrate-bench-{uuid.uuid4().hex[:8]}")
    work.mkdir(parents=True, exist_ok=True)
    targets = args.targets.split(",")
    s3 = S3() if "s3" in targets else None
    rows: list[Row] = []
    try:
        compile_pmigrate()
        t0 = time.perf_counter()
        cases = build(args.cases.split(","), work, args.scale)
        print(f"built {len(cases)} deployment(s) in {time.perf_counter() - t0:.0f}s under {work}", flush=True)
        for case in cases:
            for target in targets:
                tools = [t for t in TOOLS[target] if not args.tools or t in args.tools.split(",")]
                rows.append(measure_row(case, target, tools, work, rounds=args.rounds, workers=args.workers, s3=s3,
                                        part_size=args.part_size))  # fmt: skip
        print_table(rows, workers=args.workers)
        write_csv("blobs", csv_rows(rows, workers=args.workers, scale=args.scale), keys=("case", "target", "tool", "workers", "scale"))
    finally:
        if s3 is not None:
            s3.stop()
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
        else:  # keep the deployments for the next run, not the runs' copies
            for run_dir in work.iterdir():
                if not run_dir.name.startswith("src-"):
                    shutil.rmtree(run_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
