#!/usr/bin/env python3
"""Where one pmigrate command's CPU goes, per process: Python frames by py-spy, or machine code by perf.

    .venv/bin/pip install py-spy
    .venv/bin/python bench/profile_cpu.py --case mixed-s3 [--rate 200] [--keep DIR]
    .venv/bin/python bench/profile_cpu.py --perf --case mixed-s3 [--rate 499]
    .venv/bin/python bench/profile_cpu.py -- --config SRC.cfg --to DST.cfg --data-only -q

Starts ``python -m pmigrate ARGS`` (or a prepared case of profile_run.py),
watches /proc for the processes of its tree (parent, fork server, resource
tracker, workers, checks children) and attaches ``py-spy record
--nonblocking --gil`` to each as it appears, so that the processes the fork
server forks are sampled too. With --gil, a sample is taken only from the
thread holding the GIL, i.e. running Python: the samples of a process share
out its Python time. Each sample goes to the first of STACK_CATEGORIES
whose pattern occurs in its stack, else to the innermost of LAYERS it was
in. Printed per kind of process: CPU seconds
(from /proc), the share of each category, and the heaviest leaf frames of
the parent and the workers.

Code that releases the GIL (hashlib's SHA-256 of a large buffer, xxhash,
socket reads and writes, the kernel's side of them, reading /proc) is not
seen by py-spy --gil: --perf shows it instead, sampling the machine code of
the whole tree (``perf record``, which follows children) and sorting each
sample by the library or kernel function it hit (PERF_KERNEL, PERF_USER).
--all-threads samples every thread py-spy deems active instead of --gil; on
a loaded machine that includes threads just woken and still waiting for a
CPU.

A process that lives less than a few hundredths of a second (a checks
child) may end before py-spy is attached, or between two looks at /proc:
its categories, or also its CPU, are then missing.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.bench_blobs import _stat, compile_pmigrate  # noqa: E402
from bench.profile_run import CASES, Prepared  # noqa: E402

PYSPY = shutil.which("py-spy", path=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))

# A py-spy sample's category: the first of STACK_CATEGORIES whose pattern occurs anywhere in
# its stack (work done on behalf of something further up: a hash computed while signing); else
# the first frame from the leaf up that matches one of LAYERS (the innermost layer it was in).
STACK_CATEGORIES: list[tuple[str, str]] = [
    ("imports", "(<frozen importlib._bootstrap"),
    ("botocore: SigV4 payload SHA-256", "payload (botocore/auth.py"),
    ("botocore: SigV4 signing (rest)", "botocore/auth.py"),
    ("botocore: request checksums (CRC32/MD5)", "botocore/httpchecksum.py|conditionally_calculate_md5|calculate_md5 (botocore"),
    ("botocore: client build", "create_client (botocore|_build (pmigrate/data/s3.py"),
    ("hashing: xxh3 (+md5) of the bytes", "_take (pmigrate/transfer/worker.py"),
]
LAYERS: list[tuple[str, str]] = [
    ("HTTP: connections, sending and receiving", "http/client.py|urllib3/|botocore/awsrequest.py|botocore/httpsession.py|socket.py|ssl.py"),
    ("botocore: serialise, parse, events", "botocore/"),
    ("s3transfer: scheduling, futures", "s3transfer/"),
    ("pipes to and from workers", "multiprocessing/connection.py"),
    ("metadata reads (SQLAlchemy, sqlite3)", "sqlalchemy/|pmigrate/filerows.py"),
    ("journal", "pmigrate/journal.py"),
    ("memory governor (PSS sampling)", "pmigrate/transfer/memory.py"),
    ("progress and report", "pmigrate/progress.py|pmigrate/report.py|tqdm/"),
    ("reading the source through the hashing reader", "readinto (pmigrate/transfer/worker.py|read (pmigrate/transfer/worker.py|pmigrate/data/sizing.py"),
    ("file backend: paths, checks, open, write, rename", "pmigrate/data/file.py|posixpath|genericpath|<frozen os>"),
    ("S3 backend (pmigrate/data/s3.py)", "pmigrate/data/s3.py|pmigrate/data/cloudio.py|pmigrate/data/budget.py"),
    ("worker: per-blob logic", "pmigrate/transfer/worker.py|pmigrate/transfer/jobs.py"),
    ("pool and engine bookkeeping", "pmigrate/transfer/pool.py|pmigrate/transfer/engine.py"),
    ("threads, queues, futures", "concurrent/futures|threading.py|queue.py"),
]


# (category, regular expression on "symbol (library)" of a perf sample): first match wins;
# kernel symbols (those of [kernel.kallsyms]) are sorted by PERF_KERNEL, the others by PERF_USER
PERF_KERNEL: list[tuple[str, str]] = [
    ("memory governor: kernel reading smaps_rollup", r"smaps|show_map|walk_page|vm_normal_page"),
    ("kernel: sockets, TCP, loopback", r"tcp|inet|\bip_|sock|skb|net_|netif|__dev_|loopback"),
    ("kernel: copies to and from user space", r"copy_(to|from)_iter|copy_user|_copy_to|_copy_from|copy_mc|copy_page"),
    ("kernel: page faults, memory", r"page|mmap|munmap|fault|pte|folio|lru|memcg|mem_cgroup|alloc|tlb|vma"),
    ("kernel: scheduling, futex, wakeups", r"sched|switch|futex|wake|irq|tick|hrtimer|_raw_spin|poll"),
    ("kernel: other", r"."),
]
PERF_USER: list[tuple[str, str]] = [
    ("SHA-256 of payloads (libcrypto)", r"libcrypto"),
    ("xxh3 (libxxhash)", r"_xxhash"),
    ("CRC32 / zlib", r"libz\.|zlib|crc32"),
    ("Python: cyclic GC", r"gc_collect|visit_decref|visit_reachable|subtract_refs|move_unreachable"),
    ("Python interpreter (bytecode, objects)", r"libpython|python3"),
    ("libc (memcpy, malloc, ...)", r"libc\.so|ld-linux"),
    ("sqlite3", r"sqlite"),
]


def _literal(patterns: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(name, "|".join(re.escape(x) for x in p.split("|"))) for name, p in patterns]


_STACK, _LAYERS = _literal(STACK_CATEGORIES), _literal(LAYERS)


def stack_category(stack: str) -> str:
    for name, pattern in _STACK:
        if re.search(pattern, stack):
            return name
    for frame in reversed(stack.split(";")):
        for name, pattern in _LAYERS:
            if re.search(pattern, frame):
                return name
    return "other"


def perf_category(sample: str) -> str:
    return categorise(sample, PERF_KERNEL if "[kernel.kallsyms]" in sample else PERF_USER)


def _ticks(pid: int) -> tuple[int, int, str] | None:
    """(utime+stime ticks, parent pid, state) of a process, or None once gone."""
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12]), int(fields[1]), fields[0]) if fields else None


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def record(args: list[str], *, work: Path, rate: int, perf: bool, gil: bool) -> dict:
    """Run the command; py-spy on each process of its tree (or perf on the whole); CPU ticks per process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLIKD_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    cmd = [sys.executable, "-m", "pmigrate", *args]
    if perf:
        cmd = ["perf", "record", "-q", "-F", str(rate), "-o", str(work / "perf.data"), "--", *cmd]
    started = time.time()
    with open(work / "stderr", "w") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
    spies: dict[int, subprocess.Popen] = {}
    dumps: dict[int, subprocess.Popen] = {}  # perf: one py-spy dump of each lasting process, to tell a worker
    seen: dict[int, float] = {}
    cpu: dict[int, int] = {}
    cmdline: dict[int, str] = {}
    parent: dict[int, int] = {}
    tree = {proc.pid}
    exited = None
    while True:
        for entry in os.listdir("/proc"):  # new children of the tree
            if entry.isdigit() and int(entry) not in tree:
                info = _ticks(int(entry))
                if info and info[1] in tree:
                    tree.add(int(entry))
                    parent[int(entry)] = info[1]
        for pid in list(tree):
            info = _ticks(pid)
            if info is None or info[2] == "Z":
                continue
            cpu[pid] = info[0]
            cmdline.setdefault(pid, _cmdline(pid))
            seen.setdefault(pid, time.time())
            if perf and PYSPY and pid not in dumps and time.time() - seen[pid] > 0.2:
                with open(work / f"dump-{pid}.txt", "w") as out:
                    dumps[pid] = subprocess.Popen([PYSPY, "dump", "--nonblocking", "-p", str(pid)], stdout=out, stderr=subprocess.DEVNULL)
            if not perf and pid not in spies:
                spies[pid] = subprocess.Popen(
                    [PYSPY, "record", "--nonblocking", *(["--gil"] if gil else []), "-p", str(pid), "-r", str(rate),
                     "-f", "raw", "-o", str(work / f"spy-{pid}.txt")],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
        if exited is None and proc.poll() is not None:
            exited = time.time()
        if exited is not None and all((_ticks(p) or (0, 0, "Z"))[2] == "Z" for p in tree if p != proc.pid):
            break
        time.sleep(0.01)
    for s in [*spies.values(), *dumps.values()]:
        try:
            s.wait(timeout=30)
        except subprocess.TimeoutExpired:
            s.kill()
    root = proc.pid
    if perf:  # the command is perf's child
        cpu.pop(root, None)
        tree.discard(root)
        root = next((p for p in sorted(tree) if "-m pmigrate" in cmdline.get(p, "")), root)
    return {"rc": proc.returncode, "seconds": exited - started, "pids": sorted(tree), "cpu": cpu, "cmd": cmdline, "ppid": parent, "root": root}


def _stacks(path: Path) -> Counter:
    out: Counter = Counter()
    if not path.exists():
        return out
    for line in path.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if n.isdigit():
            out[stack] += int(n)
    return out


def _perf_samples(work: Path) -> dict[int, Counter]:
    """pid -> Counter of "symbol (library)" over perf's samples."""
    out: dict[int, Counter] = defaultdict(Counter)
    text = subprocess.run(["perf", "script", "-i", str(work / "perf.data"), "-F", "pid,tid,ip,sym,dso"],
                          capture_output=True, text=True, check=False).stdout  # fmt: skip
    for line in text.splitlines():
        head, _, rest = line.strip().partition(" ")
        pid = head.split("/")[0]
        if not pid.isdigit():
            continue
        parts = rest.strip().split(" ", 1)  # ip, then "symbol (library)"
        out[int(pid)][parts[1] if len(parts) > 1 else "?"] += 1
    return out


def _kind(pid: int, rec: dict, samples: Counter, work: Path) -> str:
    """What a process is, from its command line, and for the fork server's children from what they ran.

    A worker runs pool._serve: seen in its stacks (py-spy), or in the one
    dump taken of each process that lived long enough (perf), else guessed
    from its hashing with xxh3. The checks children do neither.
    """
    if pid == rec["root"]:
        return "parent"
    c = rec["cmd"].get(pid, "")
    if "resource_tracker" in c:
        return "resource tracker"
    if "forkserver" in c and rec["ppid"].get(pid) == rec["root"]:
        return "fork server"
    dump = work / f"dump-{pid}.txt"
    joined = " ".join(samples) + (dump.read_text(errors="replace") if dump.exists() else "")
    if "_serve (pmigrate/transfer/pool.py" in joined or "_xxhash" in joined:
        return "workers"
    return "checks children" if "forkserver" in c else "other children"


def categorise(sample: str, categories: list[tuple[str, str]]) -> str:
    for name, pattern in categories:
        if re.search(pattern, sample):
            return name
    return "other"


def report(rec: dict, work: Path, *, perf: bool, top: int = 12) -> None:
    tck = os.sysconf("SC_CLK_TCK")
    by_pid = _perf_samples(work) if perf else {pid: _stacks(work / f"spy-{pid}.txt") for pid in rec["pids"]}
    kinds: dict[str, dict] = defaultdict(lambda: {"pids": 0, "cpu": 0.0, "cats": Counter(), "leaves": Counter()})
    for pid in rec["pids"]:
        samples = by_pid.get(pid, Counter())
        k = kinds[_kind(pid, rec, samples, work)]
        k["pids"] += 1
        k["cpu"] += rec["cpu"].get(pid, 0) / tck
        for sample, n in samples.items():
            k["cats"][perf_category(sample) if perf else stack_category(sample)] += n
            frames = [f for f in sample.split(";") if not f.startswith("process ")]
            if frames:
                k["leaves"][re.sub(r":\d+\)", ")", frames[-1])] += n
    total = sum(k["cpu"] for k in kinds.values())
    how = "perf: machine code, every thread" if perf else "py-spy: Python frames of threads holding the GIL"
    print(f"exit status {rec['rc']}; {rec['seconds']:.2f} s wall; {total:.2f} s CPU in {len(rec['pids'])} processes ({how})")
    print("shares are of each process kind's samples; seconds = that share of its CPU time (from /proc)")
    for name in ("parent", "fork server", "resource tracker", "checks children", "workers", "other children"):
        if name not in kinds:
            continue
        k = kinds[name]
        samples = sum(k["cats"].values())
        print()
        print(f"-- {name} ({k['pids']} process{'es' if k['pids'] > 1 else ''}): {k['cpu']:.2f} s CPU, {samples} samples --")
        for cat, n in k["cats"].most_common():
            print(f"  {100 * n / samples:5.1f} %  {k['cpu'] * n / samples:6.2f} s  {cat}")
        if name in ("workers", "parent") and samples:
            print("  heaviest leaf frames:" if not perf else "  heaviest functions:")
            for leaf, n in k["leaves"].most_common(top):
                print(f"    {100 * n / samples:5.1f} %  {leaf[:110]}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=int, default=100, help="samples per second and process (default: 100)")
    p.add_argument("--case", choices=sorted(CASES), help="profile a prepared case of profile_run.py instead of the arguments after --")
    p.add_argument("--workers", type=int, default=4, help="--workers of a --case run (default: 4)")
    p.add_argument("--perf", action="store_true", help="sample machine code with perf instead of Python frames with py-spy")
    p.add_argument("--all-threads", action="store_true", help="py-spy: sample every running thread, not only the one holding the GIL")
    p.add_argument("--keep", type=Path, default=None, help="folder for py-spy's raw stacks (default: a temporary one, removed)")
    p.add_argument("pmigrate_args", nargs=argparse.REMAINDER, help="pmigrate's arguments, after --")
    args = p.parse_args()
    if not args.perf and PYSPY is None:
        print("py-spy not found: .venv/bin/pip install py-spy", file=sys.stderr)
        return 2
    rest = args.pmigrate_args[1:] if args.pmigrate_args[:1] == ["--"] else args.pmigrate_args
    if not rest and not args.case:
        p.error("give --case or pmigrate's arguments after --")
    work = args.keep or Path(tempfile.mkdtemp(prefix="pmigrate-cpu-"))
    work.mkdir(parents=True, exist_ok=True)
    prepared = None
    try:
        compile_pmigrate()
        if args.case:
            prepared = Prepared(args.case, work / "case", workers=args.workers)
            rest = prepared.args
        load = os.getloadavg()[0]
        rec = record(rest, work=work, rate=args.rate, perf=args.perf, gil=not args.all_threads)
        print(f"load average {load:.1f} before, {os.getloadavg()[0]:.1f} after; {os.cpu_count()} CPUs")
        report(rec, work, perf=args.perf)
    finally:
        if prepared is not None:
            prepared.close()
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
