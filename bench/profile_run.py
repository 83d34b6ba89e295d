#!/usr/bin/env python3
"""Where one pmigrate command's wall time goes: a timeline of every process of the run.

    .venv/bin/python bench/profile_run.py --case one-s3 --runs 5 [--importtime]
    .venv/bin/python bench/profile_run.py [--runs 5 --reset 'rm -rf T J'] -- --config SRC.cfg --to DST.cfg --data-only -q

--case prepares a deployment and a target (a moto server for S3, started
and stopped here): one-file, none-file, one-s3, none-s3 (one 4 KiB blob to
copy, or already copied and journaled: a pass with nothing to copy),
mixed-s3 (bench_blobs.py's case a at scale 0.17, PartSize 5 MiB) and
small-file (its case d: 5,000 blobs of about 4 KiB, file -> file).

Runs ``python -m pmigrate ARGS`` with bench/profile_hooks/ on PYTHONPATH: its
sitecustomize wraps a list of pmigrate functions (and a few heavy imports)
with wall-clock timers in every process of the run (parent, fork server,
resource tracker, and the checks children and workers forked from the fork
server), without changing pmigrate. Printed: the processes (when each
started, what it is) and, per process, its timed calls nested by containment,
in seconds from the launch of the command; the parent's untimed stretches
are shown as gaps. Each timer costs a few microseconds and a write: read the
figures of one run as where the time goes, not as the run's speed.

--runs N runs the command N times (--reset CMD before each, e.g. to remove
the target and the journal) and prints the medians of each call's start,
end and length, in the order of the first run.

--importtime adds ``-X importtime`` and prints the top imports of the parent
and of the fork server (with what its children import after the fork), of
the last run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import bench_blobs as bb  # noqa: E402

HOOKS = Path(__file__).resolve().parent / "profile_hooks"
GAP = 0.01  # parent stretches longer than this with no timed call are listed


def profile(args: list[str], *, work: Path, importtime: bool, python: str = sys.executable) -> dict:
    """Run the command once under the hooks; its events, exit status and wall time."""
    trace = work / "trace.jsonl"
    trace.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLIKD_")}
    env["PYTHONPATH"] = os.pathsep.join([str(HOOKS), str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PMIGRATE_TRACE"] = str(trace)
    cmd = [python]
    if importtime:
        cmd += ["-X", "importtime"]
        env["PMIGRATE_TRACE_IMPORTS"] = str(work / "importtime")
        for f in work.glob("importtime*"):
            f.unlink()
    cmd += ["-m", "pmigrate", *args]
    launched = time.time()
    # Output to files, not pipes: a pipe would also wait for the fork server
    # and the resource tracker, which hold it open until they have exited.
    with open(work / ("importtime.main" if importtime else "stderr"), "w") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        proc.wait()
    ended = time.time()
    events = [json.loads(line) for line in trace.read_text().splitlines() if line.strip()]
    children = {e["pid"] for e in events if e["pid"] != proc.pid}
    while not all(bb._gone(pid) for pid in children) and time.time() - ended < 30:
        time.sleep(0.002)
    gone = time.time()
    return {"events": events, "launched": launched, "ended": ended, "gone": gone, "rc": proc.returncode}


def roles(events: list[dict]) -> dict[int, str]:
    """pid -> what the process is, from its first record and the functions it ran."""
    out: dict[int, str] = {}
    names: dict[int, set] = defaultdict(set)
    for e in events:
        names[e["pid"]].add(e["name"])
        if e["name"] == "process":
            out[e["pid"]] = e["role"]
    n = defaultdict(int)
    for pid in sorted(names, key=lambda p: min(e["t0"] for e in events if e["pid"] == p and "t0" in e)):
        if pid in out and out[pid] != "main":
            continue
        if any(x.endswith("pool._serve") for x in names[pid]):
            kind = "worker"
        elif any(x.endswith("checks._child") for x in names[pid]):
            kind = "checks child"
        elif pid in out:
            kind = "parent"
            out[pid] = kind
            continue
        else:
            kind = "child"
        n[kind] += 1
        out[pid] = f"{kind} {n[kind]}"
    return out


def _nest(evs: list[dict]) -> list[tuple[int, dict]]:
    evs = sorted(evs, key=lambda e: (e["t0"], -e["t1"]))
    stack: list[dict] = []
    out = []
    for e in evs:
        while stack and e["t0"] >= stack[-1]["t1"]:
            stack.pop()
        out.append((len(stack), e))
        stack.append(e)
    return out


def _short(name: str) -> str:
    return name.replace("pmigrate.", "").replace("multiprocessing.", "mp.")


def flatten(run: dict) -> dict:
    """One run as rows keyed so that the same call lines up across runs of the same command.

    A call's key is its process's role, the names of the calls containing it
    and its own, and how many such calls came before it in that process.
    In the parent, the stretch before each top-level call (since the
    previous one ended) is a row of its own.
    """
    events, t = run["events"], run["launched"]
    role = roles(events)
    procs = {e["pid"]: e for e in events if e["name"] == "process"}
    out: dict = {"whole": run["ended"] - t, "gone": run["gone"] - t, "rc": run["rc"], "procs": {}, "calls": []}
    pids = sorted({e["pid"] for e in events}, key=lambda p: min(x.get("started", x.get("t0", float("inf"))) for x in events if x["pid"] == p))
    for pid in pids:
        mine = [e for e in events if e["pid"] == pid and e["name"] != "process" and "t0" in e]
        r = role.get(pid, "?")
        last = max(mine or [procs[pid]], key=lambda x: x["t1"])
        p = procs.get(pid, {})
        out["procs"][r] = {"pid": pid, "started": p.get("started", float("nan")) - t, "site": p.get("t0", float("nan")) - t,
                           "last": last["t1"] - t, "cpu": last.get("cpu", float("nan"))}  # fmt: skip
        seen: dict = defaultdict(int)
        chain: list[str] = []
        prev_end = p.get("t0", mine[0]["t0"] if mine else t)
        for depth, e in _nest(mine):
            chain = chain[:depth] + [e["name"]]
            key = (r, tuple(chain))
            seen[key] += 1
            key = (*key, seen[key])
            if r == "parent" and depth == 0:
                out["calls"].append({"key": ("gap", *key), "role": r, "depth": 0, "label": "(untimed: imports and code between the timed calls)",
                                     "start": prev_end - t, "end": e["t0"] - t, "gap": True})  # fmt: skip
                prev_end = max(prev_end, e["t1"])
            extra = f"  (inside the generator {e['inside']:.3f} s)" if "inside" in e else ""
            out["calls"].append({"key": key, "role": r, "depth": depth, "label": _short(e["name"]) + extra,
                                 "start": e["t0"] - t, "end": e["t1"] - t})  # fmt: skip
        if r == "parent":
            out["calls"].append({"key": ("exit",), "role": r, "depth": 0, "label": "(after the last call: atexit, interpreter teardown, exit)",
                                 "start": prev_end - t, "end": run["ended"] - t, "gap": True})  # fmt: skip
        for e in events:
            if e["pid"] == pid and "more" in e:
                out["calls"].append({"key": ("more", r, e["name"]), "role": r, "depth": 0, "more": e["more"],
                                     "label": f"{_short(e['name'])}: {e['more']} more calls", "start": 0.0, "end": e["more_seconds"]})  # fmt: skip
    return out


def _median(xs: list[float]) -> float:
    xs = [x for x in xs if x == x]
    return statistics.median(xs) if xs else float("nan")


def print_timeline(runs: list[dict], *, shortest: float = 0.0) -> None:
    """The first run's calls, each with the medians over all runs of its start, end and length."""
    flat = [flatten(r) for r in runs]
    base = flat[0]
    n = len(flat)
    print(f"{n} run{'s' if n > 1 else ''}; exit status {', '.join(str(f['rc']) for f in flat)}; whole command "
          f"{_median([f['whole'] for f in flat]):.3f} s from launch to exit (median; runs: {', '.join(format(f['whole'], '.2f') for f in flat)}); "
          f"{_median([f['gone'] for f in flat]):.3f} s until its last child process was gone")  # fmt: skip
    print()
    print(f"{'process':<16} {'exec/fork':>9} {'site':>7} {'last call':>9} {'CPU s then':>10}")
    for r in base["procs"]:
        vals = [f["procs"][r] for f in flat if r in f["procs"]]
        m = {k: _median([v[k] for v in vals]) for k in ("started", "site", "last", "cpu")}
        print(f"{r:<16} {_s(m['started']):>9} {_s(m['site']):>7} {_s(m['last']):>9} {_s(m['cpu']):>10}")
    print("(seconds from the launch, medians: exec/fork from /proc, to 10 ms; site: Python ready to import the program;"
          " last call: end of its last timed call; CPU s then: user+system seconds it had used by then)")  # fmt: skip
    by_key = [{c["key"]: c for c in f["calls"]} for f in flat]
    current = None
    for c in base["calls"]:
        if c["role"] != current:
            current = c["role"]
            print()
            print(f"-- {current} --")
            print(f"{'start':>7} {'end':>7} {'seconds':>8}  call")
        same = [k[c["key"]] for k in by_key if c["key"] in k]
        start, end = _median([x["start"] for x in same]), _median([x["end"] for x in same])
        length = _median([x["end"] - x["start"] for x in same])
        if (c.get("gap") and length <= GAP) or (c["depth"] and length < shortest):
            continue
        if "more" in c:
            print(f"{'':>16} {length:8.3f}  {c['label']} (median)")
            continue
        print(f"{start:7.3f} {end:7.3f} {length:8.3f}  {'  ' * c['depth']}{c['label']}")


def _s(x: float) -> str:
    return "-" if x != x else f"{x:.3f}"


def print_imports(work: Path, top: int = 15) -> None:
    """Summed top-level import times per process group, from -X importtime's stderr lines."""
    for f in sorted(work.glob("importtime.*")):
        rows = []
        for line in f.read_text(errors="replace").splitlines():
            m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)", line)
            if m and not m[3]:  # top level: no indentation
                rows.append((int(m[2]), m[4]))
        total = sum(r[0] for r in rows)
        who = {"main": "parent", "forkserver": "fork server (and its children after the fork)",
               "resource_tracker": "resource tracker"}.get(f.suffix[1:], f.suffix[1:])  # fmt: skip
        print()
        print(f"-- imports of the {who}: {total / 1e6:.3f} s over {len(rows)} top-level imports --")
        agg: dict[str, int] = defaultdict(int)
        for us, name in rows:
            agg[name] += us
        for name, us in sorted(agg.items(), key=lambda kv: -kv[1])[:top]:
            print(f"  {us / 1e3:8.1f} ms  {name}")


# --case: a deployment, a target and what resets it between runs, made here
# name: (bench_blobs.py case, its scale, target, S3 PartSize, copied already)
CASES = {
    "one-file": ("e", 1.0, "local", 16 << 20, False),  # one 4 KiB blob to copy, file -> file
    "none-file": ("e", 1.0, "local", 16 << 20, True),  # the same, copied already: the journal lists it
    "one-s3": ("e", 1.0, "s3", 16 << 20, False),  # one 4 KiB blob to copy, file -> S3 (moto; the bucket exists)
    "none-s3": ("e", 1.0, "s3", 16 << 20, True),
    "mixed-s3": ("a", 0.17, "s3", 5 << 20, False),  # 923 blobs of mixed sizes (230 MiB), file -> S3, PartSize 5 MiB
    "small-file": ("d", 1.0, "local", 16 << 20, False),  # 5,000 blobs of about 4 KiB, file -> file
}


class Prepared:
    """A case's pmigrate arguments, and reset() to run before each run (a fresh target, or none)."""

    def __init__(self, case: str, work: Path, *, workers: int) -> None:
        letter, scale, target, part, copied = CASES[case]
        self.s3 = bb.S3() if target == "s3" else None
        (deployment,) = bb.build([letter], work / "deployment", scale)
        self.target_dir = work / "target"
        self.journal = work / "journal.db"
        self.bucket = "profile"
        cfg = work / "target.cfg"
        if self.s3 is None:
            cfg.write_text(f'DataBackend = "file"\n[DataBackendConfig]\n  Directory = "{self.target_dir}"\n')
        else:
            cfg.write_text(self.s3.server.toml(self.bucket, extra=f"  PartSize = {part}\n"))
        self.args = ["--config", str(deployment.src / "plikd.cfg"), "--to", str(cfg), "--data-only", "-q",
                     "--workers", str(workers), "--journal", str(self.journal)]  # fmt: skip
        self.copied = copied
        self._fresh()
        if copied:  # a first run copies the blob: the runs profiled find it in the journal
            subprocess.run([sys.executable, "-m", "pmigrate", *self.args], check=True, stdout=subprocess.DEVNULL,
                           env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip

    def _fresh(self) -> None:
        shutil.rmtree(self.target_dir, ignore_errors=True)
        self.journal.unlink(missing_ok=True)
        if self.s3 is not None:
            self.s3.empty(self.bucket)
            self.s3.server.client().create_bucket(Bucket=self.bucket)
            self.s3.settle()

    def reset(self) -> None:
        if not self.copied:
            self._fresh()

    def close(self) -> None:
        if self.s3 is not None:
            self.s3.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--case", choices=sorted(CASES), help="profile a prepared case instead of the arguments given after --")
    p.add_argument("--workers", type=int, default=4, help="--workers of a --case run (default: 4)")
    p.add_argument("--importtime", action="store_true", help="also run python -X importtime and sum the imports per process")
    p.add_argument("--runs", type=int, default=1, help="run the command this many times and print medians (default: 1)")
    p.add_argument("--reset", default="", help="shell command run before each run, e.g. to remove the target and journal")
    p.add_argument("--shortest", type=float, default=0.002, help="hide nested calls shorter than this, in seconds (default: 0.002)")
    p.add_argument("--keep", type=Path, default=None, help="folder for the trace files (default: a temporary one, removed)")
    p.add_argument("pmigrate_args", nargs=argparse.REMAINDER, help="pmigrate's arguments, after --")
    args = p.parse_args()
    rest = args.pmigrate_args[1:] if args.pmigrate_args[:1] == ["--"] else args.pmigrate_args
    if not rest and not args.case:
        p.error("give --case or pmigrate's arguments after --")
    work = args.keep or Path(tempfile.mkdtemp(prefix="pmigrate-profile-"))
    work.mkdir(parents=True, exist_ok=True)
    prepared = None
    try:
        bb.compile_pmigrate()
        if args.case:
            prepared = Prepared(args.case, work / "case", workers=args.workers)
            rest = prepared.args
        runs = []
        for _ in range(args.runs):
            if args.reset:
                subprocess.run(args.reset, shell=True, check=True)
            if prepared is not None:
                prepared.reset()
            runs.append(profile(rest, work=work, importtime=args.importtime))
        print(f"load average {os.getloadavg()[0]:.1f} at the end, {os.cpu_count()} CPUs")
        print_timeline(runs, shortest=args.shortest)
        if args.importtime:
            print_imports(work)
    finally:
        if prepared is not None:
            prepared.close()
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
