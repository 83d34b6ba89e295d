"""Timing hooks for bench/profile_run.py: loaded by every Python process of a profiled run.

Only active when PMIGRATE_TRACE names a file. Wraps the functions listed in
WATCH as their modules are imported (so ``from x import f`` sees the wrapper
too) and appends one JSON line per call to that file: pid, parent pid,
function, wall-clock start and end, and the CPU time the process had used
by the end. Processes forked from the fork server
(checks child, workers) inherit the wrapped functions. With
PMIGRATE_TRACE_IMPORTS set, the fork server's and the resource tracker's
stderr (where ``-X importtime`` writes) go to files of their own, so the
parent's import times can be told from theirs.
"""

from __future__ import annotations

import atexit
import functools
import importlib.abc
import importlib.machinery
import json
import os
import sys
import time

TRACE = os.environ.get("PMIGRATE_TRACE")

# module -> attributes to time ("Class.method" for methods)
WATCH: dict[str, tuple[str, ...]] = {
    "pmigrate.cli": ("main", "build_parser", "_main"),
    "pmigrate.config": ("load_pair",),
    "pmigrate.migrate": ("run", "check_sides", "check_source", "_run_stages"),
    "pmigrate.lock": ("FileLock.acquire", "PostgresLock.acquire", "MysqlLock.acquire", "FileLock.release"),
    "pmigrate.metadata.snapshot": ("take",),
    "pmigrate.metadata.db": ("check_connect", "source_engine"),
    "pmigrate.metadata.copier": ("preflight", "run"),
    "pmigrate.transfer.engine": ("preflight", "run", "_pool", "_Copy._sweep", "_Copy._commit", "_Copy._summarise"),
    "pmigrate.transfer.checks": ("run_checks", "_child", "_check"),
    "pmigrate.transfer.precheck": ("room", "probe"),
    "pmigrate.transfer.uploads": ("sweep",),
    "pmigrate.journal": ("Journal.open", "Journal.peek", "Journal.done", "Journal.commit", "Journal.close"),
    "pmigrate.transfer.memory": ("governor",),
    "pmigrate.transfer.pool": ("Pool.start", "Pool._start", "Pool.run", "Pool._stop", "_serve"),
    "pmigrate.transfer.worker": ("make_handler", "BlobHandler.__call__", "BlobHandler.close"),
    "pmigrate.filerows": ("scan", "totals"),
    "pmigrate.report": ("Report.print_summary", "Report.write_json"),
    "pmigrate.data.s3": ("S3Backend._build", "S3Backend.check", "S3Backend.probe_write"),
    "multiprocessing.forkserver": ("ForkServer.ensure_running",),
    "multiprocessing.resource_tracker": ("ResourceTracker.ensure_running",),
}
# imports timed as a whole (besides the modules of WATCH), to see which ones the run waits for
IMPORTS = {
    "sqlalchemy", "boto3", "botocore.session", "s3transfer.manager", "xxhash", "tqdm", "psycopg", "pymysql",
    "pmigrate.cli", "pmigrate.fakedb", "pmigrate.migrate", "pmigrate.transfer.engine", "pmigrate.data.s3", "pmigrate.data.file",
    "pmigrate.data.s3_session", "botocore.config",
    "pmigrate.verify", "multiprocessing.synchronize", "multiprocessing.sharedctypes",
}
CAP = 50  # events written per function and process; later calls are only counted

_fd = -1
_counts: dict[str, list[float]] = {}  # name -> [calls, seconds] past CAP, per process
_count_pid = 0


def _emit(name: str, t0: float, t1: float, **extra: object) -> None:
    global _count_pid
    pid = os.getpid()
    if _count_pid != pid:  # a fork: the counts are the parent's
        _counts.clear()
        _count_pid = pid
    c = _counts.setdefault(name, [0, 0.0])
    c[0] += 1
    if c[0] > CAP:
        c[1] += t1 - t0
        return
    _write({"pid": pid, "ppid": os.getppid(), "name": name, "t0": t0, "t1": t1, "cpu": time.process_time(), **extra})


def _write(rec: dict) -> None:
    try:
        os.write(_fd, (json.dumps(rec) + "\n").encode())
    except OSError:
        pass


def _flush_counts() -> None:
    if _count_pid != os.getpid():
        return
    for name, (n, secs) in _counts.items():
        if n > CAP:
            _write({"pid": os.getpid(), "ppid": os.getppid(), "name": name, "more": n - CAP, "more_seconds": secs})


def _timed(fn, name: str):
    if getattr(getattr(fn, "__code__", None), "co_flags", 0) & 0x20:  # CO_GENERATOR

        @functools.wraps(fn)
        def gen_wrapper(*a, **kw):
            first = time.time()
            inside = 0.0
            it = fn(*a, **kw)
            try:
                while True:
                    t = time.time()
                    try:
                        item = next(it)
                    except StopIteration:
                        inside += time.time() - t
                        return
                    inside += time.time() - t
                    yield item
            finally:
                _emit(name, first, time.time(), inside=inside)

        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*a, **kw):
        t0 = time.time()
        try:
            return fn(*a, **kw)
        finally:
            _emit(name, t0, time.time())
            if name.endswith("_serve"):
                _flush_counts()  # a worker ends with os._exit: no atexit

    return wrapper


def _patch(module) -> None:
    for attr in WATCH.get(module.__name__, ()):
        owner, _, leaf = attr.rpartition(".")
        target = getattr(module, owner) if owner else module
        if target is None or not hasattr(target, leaf):
            continue
        fn = target.__dict__[leaf] if leaf in getattr(target, "__dict__", {}) else getattr(target, leaf)
        if isinstance(fn, (staticmethod, classmethod)):
            setattr(target, leaf, type(fn)(_timed(fn.__func__, f"{module.__name__}.{attr}")))
        else:
            setattr(target, leaf, _timed(fn, f"{module.__name__}.{attr}"))


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name not in WATCH and name not in IMPORTS:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def timed_exec(module):
            t0 = time.time()
            exec_module(module)
            _patch(module)
            _emit("import " + name, t0, time.time())

        spec.loader.exec_module = timed_exec
        return spec


def _role() -> str:
    try:
        cmd = open("/proc/self/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "?"
    if "forkserver" in cmd:
        return "forkserver"
    if "resource_tracker" in cmd:
        return "resource_tracker"
    return "main"


def _started() -> float:
    """This process's start (exec or fork), wall clock, from /proc: to 1/CLK_TCK."""
    ticks = int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19])
    uptime = float(open("/proc/uptime").read().split()[0])
    return time.time() - (uptime - ticks / os.sysconf("SC_CLK_TCK"))


if TRACE:
    _fd = os.open(TRACE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    role = _role()
    _write({"pid": os.getpid(), "ppid": os.getppid(), "name": "process", "role": role, "started": _started(), "t0": time.time(), "t1": time.time()})
    imports = os.environ.get("PMIGRATE_TRACE_IMPORTS")
    if imports and role != "main":
        err = os.open(f"{imports}.{role}", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(err, 2)
        os.close(err)
    sys.meta_path.insert(0, _Finder())

    def _at_exit() -> None:  # registered first, so run last of the atexit handlers
        _flush_counts()
        if role == "main":
            now = time.time()
            _write({"pid": os.getpid(), "ppid": os.getppid(), "name": "atexit handlers done", "t0": now, "t1": now,
                    "cpu": time.process_time()})

    atexit.register(_at_exit)
