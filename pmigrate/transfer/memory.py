"""The run's memory limit, kept by holding back upload-part tokens.

Upload parts are the only memory a run can choose: the processes themselves
(Python and SQLAlchemy in the parent, boto3 in each worker, some 20 MiB a
worker) are what they are once started. So the parent measures what the
whole process tree uses a few times a second, takes away the parts held,
and lets the workers hold only as many parts as fit in what is left. The
tokens it holds back come from the pool the workers share
(pmigrate.data.budget): a worker that wants a part waits until others
finish theirs.

Memory is counted as PSS (a page shared by n processes counts 1/n in each),
so that the pages the fork server shares with every worker count once. The
memory outside parts is taken as the largest of the last few samples: a
token is taken before its part is read, so a sample can see the token
without the bytes.

A limit below what the processes use without any part still lets one part
through at a time: the run goes on, slowly, and says so.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

log = logging.getLogger(__name__)

MiB = 1 << 20
MB = 1000 * 1000
OVERHEAD = 100 * MB  # the processes' allowance in the default limit: workers x 2 x PartSize + 100 MB
MARGIN = 8 * MiB  # kept free for what grows between samples
SAMPLE = 0.25  # seconds between samples
WINDOW = 20  # samples of the memory outside parts remembered: the largest counts


def default_limit(*, workers: int, part_bytes: int) -> int:
    """Two parts per worker, one uploading and one being read, and 100 MB for the processes."""
    return workers * 2 * part_bytes + OVERHEAD


def allowed_parts(*, limit: int, base: int, part_bytes: int, capacity: int) -> int:
    """How many parts fit beside `base` bytes of processes: at least one, at most `capacity`."""
    return max(1, min(capacity, (limit - base - MARGIN) // part_bytes))


def pss(pid: int) -> int:
    """Proportional set size of one process in bytes; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def children(pid: int) -> list[int]:
    """Direct children of pid (the fork server, the resource tracker), from /proc."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return out


def tree(workers: Callable[[], list[int]]) -> Callable[[], list[int]]:
    """This process, its children and the workers; children are looked up again when the workers change."""
    seen: list[int] | None = None
    helpers: list[int] = []

    def pids() -> list[int]:
        nonlocal seen, helpers
        now = workers()
        if now != seen:  # started or replaced: the fork server is there by now
            seen, helpers = now, children(os.getpid())
        return [os.getpid(), *helpers, *now]

    return pids


def measurable() -> bool:
    """PSS needs Linux's smaps_rollup (4.14 and later)."""
    return Path(f"/proc/{os.getpid()}/smaps_rollup").exists()


@dataclass
class Figures:
    limit: int
    peak: int = 0  # largest sampled PSS of the tree
    fewest: int = 0  # fewest parts allowed at once
    most: int = 0  # most parts allowed at once
    over: int = 0  # largest memory outside parts seen above the limit (0: never)


class MemoryGovernor:
    """Holds back part tokens from the shared pool so that the process tree stays within `limit` bytes."""

    def __init__(
        self,
        pool: Any,
        *,
        capacity: int,
        part_bytes: int,
        limit: int,
        pids: Callable[[], Iterable[int]],
        measure: Callable[[int], int] = pss,
    ) -> None:
        self._pool = pool
        self._capacity = capacity
        self._part = part_bytes
        self._pids = pids
        self._measure = measure
        self._bases: deque[int] = deque(maxlen=WINDOW)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.withheld = 0
        self.figures = Figures(limit=limit)

    def start(self) -> None:
        """One sample now, so the first parts already fit; then a sample every SAMPLE seconds."""
        self.step()
        self._thread = threading.Thread(target=self._loop, name="pmigrate-memory", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        while self.withheld:
            self._pool.release()
            self.withheld -= 1

    def step(self) -> int:
        """Measure, then hold back or give back tokens; the number of parts now allowed."""
        used = sum(self._measure(p) for p in set(self._pids()))
        held = self._capacity - self.withheld - self._pool.get_value()
        self._bases.append(used - max(0, held) * self._part)
        base = max(self._bases)
        fig = self.figures
        allowed = allowed_parts(limit=fig.limit, base=base, part_bytes=self._part, capacity=self._capacity)
        target = self._capacity - allowed
        while self.withheld < target and self._pool.acquire(False):
            self.withheld += 1  # a token in use now is taken back as soon as it is returned
        while self.withheld > target:
            self._pool.release()
            self.withheld -= 1
        fig.peak = max(fig.peak, used)
        fig.fewest = min(fig.fewest or allowed, allowed)
        fig.most = max(fig.most, allowed)
        if base + MARGIN + self._part > fig.limit:
            fig.over = max(fig.over, base)
        return allowed

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE):
            try:
                self.step()
            except Exception:  # noqa: BLE001 - a failed sample leaves the tokens as they are
                log.debug("memory sample failed", exc_info=True)
