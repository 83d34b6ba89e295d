"""--bwlimit and --tpslimit: one budget for the whole pool, so that a live source keeps serving its users.

Rates are written as rclone writes them: ``10M`` (MiB/s; a bare number is
KiB/s, suffixes B, K, M, G, T, P are powers of 1024), ``off``, or a
timetable ``08:00,512k 19:00,off`` whose entries may name a day of the week
(``Mon-10:00,2M``); an entry without a day applies every day, and the last
entry before now (wrapping round the week) is the one in force. The rate
is looked up on the clock at each take, so a timetable switches while the
run goes on.

One token bucket is shared by every worker process: its level and time
stamp live in shared memory under one lock, and a taker pays after the fact
for what it read (the level may go below zero, and the taker sleeps until
it is paid back). So the limit is on the pool's total, however many workers
read at once; a lock per read of up to 1 MiB costs microseconds.

On a Dask cluster (--cluster) there is no memory the workers share: the
parent divides each rate among the worker processes the cluster has when
the run starts, and each process keeps a bucket of its own for its threads.
Workers that join later take the same share, so the total may exceed the
limit by that much.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, BinaryIO

_SUFFIX = {"B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WEEK = 7 * 24 * 60  # minutes
BURST_SECONDS = 0.25  # what an idle pool may read at once before the limit bites
NAP = 0.5  # seconds a paying reader sleeps between looks at whether the run is stopping


class LimitSyntaxError(ValueError):
    """A rate or timetable that does not parse; the message names what was expected."""


def parse_rate(text: str) -> float:
    """Bytes per second from rclone's notation; 0.0 for ``off`` (no limit)."""
    t = text.strip()
    if t.lower() == "off":
        return 0.0
    if ":" in t:
        raise LimitSyntaxError(f"{text!r}: pmigrate limits what it reads from the source only: give one rate, not UP:DOWN")
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([BKMGTP]?)(?:iB|i)?", t, re.IGNORECASE)
    if m is None:
        raise LimitSyntaxError(f"{text!r} is not a rate: write e.g. 512k, 10M or off")
    unit = m.group(2).upper() or "K"  # rclone: a bare number is KiB/s
    return float(m.group(1)) * _SUFFIX[unit]


@dataclass(frozen=True)
class Timetable:
    """Rates in force from given minutes of the week (Monday 00:00 = 0); one entry: a constant rate."""

    slots: tuple[tuple[int, float], ...]  # (minute of the week, bytes/s; 0: no limit), sorted
    text: str = ""

    @property
    def constant(self) -> bool:
        return len(self.slots) == 1

    def rate_at(self, when: time.struct_time) -> float:
        """The rate in force at a local time: the last slot at or before it, else the week's last."""
        if self.constant:
            return self.slots[0][1]
        now = when.tm_wday * 1440 + when.tm_hour * 60 + when.tm_min
        rate = self.slots[-1][1]
        for minute, r in self.slots:
            if minute > now:
                break
            rate = r
        return rate

    def unlimited(self) -> bool:
        return all(r == 0 for _, r in self.slots)


def parse_timetable(text: str) -> Timetable:
    """``10M``, ``off``, or entries ``[Day-]HH:MM,RATE`` separated by spaces or semicolons."""
    entries = [e for e in re.split(r"[\s;]+", text.strip()) if e]
    if not entries:
        raise LimitSyntaxError("an empty rate: write e.g. 10M, off, or 08:00,10M 19:00,off")
    if len(entries) == 1 and "," not in entries[0]:
        return Timetable(((0, parse_rate(entries[0])),), text)
    slots: dict[int, float] = {}
    for entry in entries:
        when, sep, rate = entry.partition(",")
        if not sep:
            raise LimitSyntaxError(f"{entry!r} in the timetable is not TIME,RATE: write e.g. 08:00,10M or Mon-08:00,10M")
        value = parse_rate(rate)
        day, minute = _when(when, entry)
        for d in range(7) if day is None else (day,):
            slots[d * 1440 + minute] = value
    return Timetable(tuple(sorted(slots.items())), text)


def _when(text: str, entry: str) -> tuple[int | None, int]:
    m = re.fullmatch(r"(?:([A-Za-z]{3})-)?(\d{1,2}):?(\d{2})", text)
    if m is None:
        raise LimitSyntaxError(f"{entry!r}: {text!r} is not a time: write HH:MM, or Mon-HH:MM")
    day = None
    if m.group(1):
        if m.group(1).lower() not in _DAYS:
            raise LimitSyntaxError(f"{entry!r}: {m.group(1)!r} is not a day: write Mon, Tue, Wed, Thu, Fri, Sat or Sun")
        day = _DAYS.index(m.group(1).lower())
    hh, mm = int(m.group(2)), int(m.group(3))
    if hh > 23 or mm > 59:
        raise LimitSyntaxError(f"{entry!r}: {text!r} is not a time of day (00:00 to 23:59)")
    return day, hh * 60 + mm


def parse_tps(text: str) -> float:
    """Requests per second, rclone's --tpslimit: a positive number, or 0/off for no limit."""
    t = text.strip().lower()
    if t == "off":
        return 0.0
    try:
        value = float(t)
    except ValueError:
        raise LimitSyntaxError(f"{text!r} is not a number of requests per second: write e.g. 10, or 0 for no limit") from None
    if value < 0 or value != value or value == float("inf"):
        raise LimitSyntaxError(f"{text!r}: requests per second must be 0 (no limit) or more")
    return value


# -- the bucket -------------------------------------------------------------------


class Bucket:
    """A token bucket over a two-slot array (level, stamp) and a lock: shared memory, or this process's.

    take(n) pays for n units already used: the level goes down by n, and the
    taker sleeps until the refill brings it back to zero.
    """

    def __init__(self, rate: Callable[[], float], state: Any, lock: Any, *, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self._rate = rate
        self._state = state
        self._lock = lock
        self._sleep = sleep
        self._clock = clock

    def take(self, n: float, *, stopped: Callable[[], bool] | None = None) -> float:
        """Pay for n units; returns the seconds slept, cut short when ``stopped()`` says the run is stopping."""
        rate = self._rate()
        if rate <= 0 or n <= 0:
            return 0.0
        burst = max(rate * BURST_SECONDS, 1.0)
        with self._lock:
            now = self._clock()
            level, stamp = self._state[0], self._state[1]
            level = min(burst, level + (now - stamp) * rate) if stamp else burst
            level -= n
            self._state[0], self._state[1] = level, now
        if level >= 0:
            return 0.0
        wait = left = -level / rate
        while left > 0:
            if stopped is not None and stopped():
                break
            self._sleep(min(left, NAP))
            left -= NAP
        return wait


@dataclass(frozen=True)
class Limits:
    """What the workers are given: picklable; buckets are shared memory of a local pool, None on a cluster."""

    bw: Timetable | None = None
    tps: float = 0.0
    share: float = 1.0  # of each rate, for one process of a cluster
    bw_state: Any = None
    tps_state: Any = None
    lock: Any = None

    @property
    def active(self) -> bool:
        return (self.bw is not None and not self.bw.unlimited()) or self.tps > 0


def shared(ctx: Any, *, bw: Timetable | None, tps: float) -> Limits | None:
    """Limits for a pool of processes started from ``ctx``; None when nothing is limited."""
    limits = Limits(bw=bw, tps=tps)
    if not limits.active:
        return None
    return replace(limits, bw_state=ctx.RawArray("d", 2), tps_state=ctx.RawArray("d", 2), lock=ctx.Lock())


def for_cluster(context: Any, processes: int) -> Any:
    """A copy context whose limits are one process's share among ``processes`` cluster workers."""
    limits = getattr(context, "limits", None)  # only the copy's context carries limits
    if limits is None:
        return context
    return replace(context, limits=divided(limits, processes))


def divided(limits: Limits | None, processes: int) -> Limits | None:
    """The share of one of ``processes`` cluster workers, without shared memory (module docstring)."""
    if limits is None:
        return None
    return replace(limits, share=1.0 / max(1, processes), bw_state=None, tps_state=None, lock=None)


# -- in a worker process ------------------------------------------------------------

_installed: Limits | None = None
_bw: Bucket | None = None
_tps: Bucket | None = None


def install(limits: Limits | None) -> None:
    """Make ``limits`` this process's (a worker's), before it builds its backends' clients."""
    global _installed, _bw, _tps
    if limits is _installed:
        return
    _installed, _bw, _tps = limits, None, None
    if limits is None or not limits.active:
        return
    lock = limits.lock if limits.lock is not None else threading.Lock()
    if limits.bw is not None and not limits.bw.unlimited():
        bw, share = limits.bw, limits.share
        _bw = Bucket(lambda: bw.rate_at(time.localtime()) * share, limits.bw_state or [0.0, 0.0], lock)
    if limits.tps > 0:
        tps = limits.tps * limits.share
        _tps = Bucket(lambda: tps, limits.tps_state or [0.0, 0.0], lock)


def reader(raw: BinaryIO, *, stopped: Callable[[], bool] | None = None) -> BinaryIO:
    """The source stream, paying the bandwidth bucket for every byte read; raw itself without --bwlimit."""
    return raw if _bw is None else _Limited(raw, _bw, stopped)  # type: ignore[return-value]


def paid(n: int, *, stopped: Callable[[], bool] | None = None) -> None:
    """Pay the bandwidth bucket for ``n`` bytes read from the source outside reader() (a small blob read whole)."""
    if _bw is not None:
        _bw.take(n, stopped=stopped)


def request(**_kwargs: Any) -> None:
    """One request to an object store, paid to the --tpslimit bucket (also a botocore ``before-send`` handler)."""
    if _tps is not None:
        _tps.take(1)


def tps_limited() -> bool:
    return _tps is not None


def throttle(obj: Any, method: str) -> None:
    """Pay one --tpslimit token before each call of ``obj.method``: the one call every request of a client makes."""
    if _tps is None:
        return
    call = getattr(obj, method)

    def paid(*args: Any, **kwargs: Any) -> Any:
        request()
        return call(*args, **kwargs)

    setattr(obj, method, paid)


class _Limited:
    """read/readinto of a source stream, paid for after each call; everything else is the stream's."""

    __slots__ = ("_raw", "_bucket", "_stopped")

    def __init__(self, raw: BinaryIO, bucket: Bucket, stopped: Callable[[], bool] | None) -> None:
        self._raw = raw
        self._bucket = bucket
        self._stopped = stopped

    def read(self, n: int | None = -1) -> bytes:
        data = self._raw.read() if n is None or n < 0 else self._raw.read(n)
        self._bucket.take(len(data), stopped=self._stopped)
        return data

    def readinto(self, buf: Any) -> int:
        if hasattr(self._raw, "readinto"):
            n = self._raw.readinto(buf)
        else:  # a stream with read() alone
            n = len(data := self._raw.read(len(buf)))
            buf[:n] = data
        self._bucket.take(n or 0, stopped=self._stopped)
        return n

    def close(self) -> None:
        self._raw.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)
