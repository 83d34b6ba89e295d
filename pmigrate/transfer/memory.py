"""The run's memory, kept in bounds by holding back upload-part tokens.

Upload parts are the only memory a run can choose: the processes themselves
(Python and SQLAlchemy in the parent, boto3 in each worker, some 20 MiB a
worker) are what they are once started. So the parent measures what the
whole process tree uses a few times a second, takes away the parts held,
and so knows what the processes use of their own. The tokens it holds back
come from the pool the workers share (pmigrate.data.budget): a worker that
wants a part waits until others finish theirs.

Without --max-memory the parts come on top of the processes, whatever they
measure: two a worker, as many as fit in half of the memory the host has
available (MemAvailable) at the start. A fixed default could not know what
the processes cost on this host, and came out below it. With --max-memory
the processes and the parts together stay within it: parts are held back
as the processes grow. A limit below what the processes use without any
part still lets one part through at a time: the run goes on, slowly, and
says so; a run whose peak went above the limit says so too.

Memory is counted as PSS (a page shared by n processes counts 1/n in each),
so that the pages the fork server shares with every worker count once. The
memory outside parts is taken as the largest of the last few samples: a
token is taken before its part is read, so a sample can see the token
without the bytes.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pmigrate.words import plural, size

log = logging.getLogger(__name__)

MiB = 1 << 20
MARGIN = 8 * MiB  # kept free for what grows between samples
SAMPLE = 0.25  # seconds between samples
WINDOW = 20  # samples of the memory outside parts remembered: the largest counts
HOST_SHARE = 0.5  # of MemAvailable at the start that upload parts may take without --max-memory


def available() -> int | None:
    """MemAvailable from /proc/meminfo: what the host can give without swapping; None where unknown."""
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def default_parts(*, capacity: int, part_bytes: int, host_available: int | None) -> int:
    """Parts at once without --max-memory: two a worker (`capacity`), within HOST_SHARE of what the host has available."""
    if host_available is None:
        return capacity
    return max(1, min(capacity, int(host_available * HOST_SHARE) // part_bytes))


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
    limit: int | None  # --max-memory; None: parts on top of the processes, up to `cap`
    part: int  # bytes of one upload part
    cap: int  # most parts ever allowed at once: two a worker, or fewer if the host cannot spare them
    capacity: int  # two a worker
    host_available: int | None = None  # MemAvailable at the start, when it set the cap
    peak: int = 0  # largest sampled PSS of the tree
    base: int = 0  # largest memory outside parts seen: the processes' own
    fewest: int = 0  # fewest parts allowed at once
    most: int = 0  # most parts allowed at once
    over: int = 0  # largest memory outside parts seen above the limit (0: never)

    @property
    def exceeded(self) -> bool:
        return self.limit is not None and self.peak > self.limit

    def as_json(self) -> dict:
        return {
            "limit_bytes": self.limit,
            "peak_bytes": self.peak,
            "processes_bytes": self.base,
            "part_bytes": self.part,
            "parts_at_once": [self.fewest, self.most],
            "parts_cap": self.cap,
            "host_available_bytes": self.host_available,
            "exceeded": self.exceeded,
        }

    def summary(self) -> str:
        """The summary's line: the peak, the processes' own share, the parts."""
        parts = f"{self.most}" if self.fewest == self.most else f"{self.fewest} to {self.most}"
        held = f"the processes {size(self.base)}; upload parts of {size(self.part)}, {parts} at once"
        if self.limit is None:
            why = "2 a worker"
            if self.cap < self.capacity and self.host_available is not None:
                why = f"as many as half the {size(self.host_available)} available allowed"
            return f"memory: peak {size(self.peak)}: {held} ({why}; no --max-memory)"
        if self.exceeded:
            return f"memory: peak {size(self.peak)}, above the {size(self.limit)} allowed: {held}"
        return f"memory: peak {size(self.peak)} of {size(self.limit)} allowed: {held}"

    def warning(self) -> str:
        """Why a given limit did not hold, and what to do; '' when it did (a default run never warns)."""
        if self.limit is None:
            return ""
        fix = "raise --max-memory or lower --workers"
        if self.over:
            peak = f"; the run peaked at {size(self.peak)}" if self.exceeded else ""
            return (
                f"the processes alone use {size(self.over)}, leaving no room under --max-memory {size(self.limit)} "
                f"for upload parts: one part at a time{peak}; {fix}"
            )
        if self.exceeded:
            return f"the run peaked at {size(self.peak)}, above --max-memory {size(self.limit)}; {fix}"
        return ""


class MemoryGovernor:
    """Holds back part tokens from the shared pool: at most `cap` parts, and within `limit` bytes when one is given."""

    def __init__(
        self,
        pool: Any,
        *,
        capacity: int,
        part_bytes: int,
        limit: int | None,
        pids: Callable[[], Iterable[int]],
        cap: int | None = None,
        host_available: int | None = None,
        measure: Callable[[int], int] = pss,
    ) -> None:
        self._pool = pool
        self._capacity = capacity  # tokens in the pool
        self._part = part_bytes
        self._pids = pids
        self._measure = measure
        self._bases: deque[int] = deque(maxlen=WINDOW)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.withheld = 0
        cap = capacity if cap is None else min(cap, capacity)
        self.figures = Figures(limit=limit, part=part_bytes, cap=cap, capacity=capacity, host_available=host_available)

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
        if fig.limit is None:
            allowed = fig.cap
        else:
            allowed = allowed_parts(limit=fig.limit, base=base, part_bytes=self._part, capacity=fig.cap)
        target = self._capacity - allowed
        while self.withheld < target and self._pool.acquire(False):
            self.withheld += 1  # a token in use now is taken back as soon as it is returned
        while self.withheld > target:
            self._pool.release()
            self.withheld -= 1
        if allowed < (fig.fewest or allowed + 1) or allowed > fig.most:
            log.debug("memory: up to %s at once, beside %s of processes", plural(allowed, "upload part"), size(base))
        fig.peak = max(fig.peak, used)
        fig.base = max(fig.base, base)
        fig.fewest = min(fig.fewest or allowed, allowed)
        fig.most = max(fig.most, allowed)
        if fig.limit is not None and base + MARGIN + self._part > fig.limit:
            fig.over = max(fig.over, base)
        return allowed

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE):
            try:
                self.step()
            except Exception:  # a failed sample leaves the tokens as they are
                log.debug("memory sample failed", exc_info=True)


def governor(
    pool: Any, *, workers: int, capacity: int, part_bytes: int, limit: int | None, pids: Callable[[], Iterable[int]]
) -> MemoryGovernor | None:
    """The run's governor, started; None with --max-memory 0 or where PSS cannot be measured."""
    if limit == 0:
        log.info("memory: --max-memory 0: up to %s of %s at once, no limit", plural(capacity, "upload part"), size(part_bytes))
        return None
    if not measurable():
        log.info("memory: not measurable here (no /proc/self/smaps_rollup): up to %s at once", plural(capacity, "upload part"))
        return None
    host = None
    if limit is None:
        host = available()
        cap = default_parts(capacity=capacity, part_bytes=part_bytes, host_available=host)
        log.info(
            "memory: no --max-memory: up to %s of %s at once (2 a worker for %s, within half the %s available) "
            "on top of what the processes use",
            plural(cap, "upload part"), size(part_bytes), plural(workers, "worker"),
            "?" if host is None else size(host),
        )  # fmt: skip
    else:
        cap = capacity
        log.info(
            "memory: --max-memory %s for the processes and up to %s of %s at once",
            size(limit), plural(capacity, "upload part"), size(part_bytes),
        )  # fmt: skip
    gov = MemoryGovernor(pool, capacity=capacity, part_bytes=part_bytes, limit=limit, pids=pids, cap=cap, host_available=host)
    gov.start()
    return gov
