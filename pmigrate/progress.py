"""Progress as a subscriber: bars on a terminal, a line every few seconds elsewhere, nothing with -q.

A stage opens a Progress with the meters it counts (blobs and bytes, the
rows of one table) and updates them. On a terminal they are tqdm bars.
Elsewhere (cron, systemd, ``2> log``) bars redrawn with carriage returns
only garble the log, so one line says where the stage is every ``every``
seconds instead, as rclone's --stats does. Sizes are in the summary's
binary units (MiB, MiB/s) in both; counts are whole numbers.

A line is written when a meter moves or the stage ticks (the blob engine
does twice a second), not from a thread of its own: the verify pool forks
while progress is shown, and a fork must not catch another thread holding
stderr's lock.
"""

from __future__ import annotations

import sys
import time
from contextlib import AbstractContextManager
from typing import Any, TextIO

from pmigrate.quote import line
from pmigrate.words import size

BYTES = "B"  # the unit of a meter counting bytes; any other unit is a noun ("row", "blob")

OFF, BARS, LINES = "off", "bars", "lines"


def _count(n: int, unit: str) -> str:
    return f"{n} {unit}" if unit.endswith("s") or n == 1 else f"{n} {unit}s"


def amount(n: float, unit: str) -> str:
    """A meter's figure as the summary writes it: '143.2 MiB', '600 rows'."""
    return size(n) if unit == BYTES else _count(int(n), unit)


def duration(seconds: float) -> str:
    """'45s', '3m05s', '2h10m': short enough for a line written every few seconds."""
    s = int(seconds + 0.5)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _speed(rate: float, unit: str) -> str:
    if unit == BYTES:
        return f"{size(rate)}/s"
    noun = unit if unit.endswith("s") else unit + "s"
    return f"{rate:.1f} {noun}/s" if rate < 10 else f"{rate:.0f} {noun}/s"


class Subscriber:
    """Hears of a stage's work item by item, as s3transfer's subscribers do; every hook a no-op.

    The stage calls it, never checks it: a quiet run has this one. on_progress
    takes bytes moved, negative when a stream tried again rewinds what it had
    counted; the blob stage counts a blob's bytes once its result is in, so a
    blob's retries inside a worker never reach it.
    """

    def on_queued(self, *, size: int) -> None:
        """An item handed to the workers, of ``size`` bytes."""

    def on_progress(self, nbytes: int) -> None:
        """``nbytes`` more moved (fewer when negative)."""

    def on_done(self, *, ok: bool, items: int = 1) -> None:
        """``items`` ended (one, or a batch taken as done without a job), well or not."""


class Bars(Subscriber):
    """A subscriber that moves two meters: items done and bytes moved."""

    def __init__(self, items: Meter | NullBar, nbytes: Meter | NullBar) -> None:
        self._items = items
        self._bytes = nbytes

    def on_progress(self, nbytes: int) -> None:
        if nbytes:
            self._bytes.update(nbytes)

    def on_done(self, *, ok: bool, items: int = 1) -> None:
        self._items.update(items)


class NullBar:
    """A meter that shows nothing."""

    n = 0

    def update(self, n: int = 1) -> None:
        pass

    def tick(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> NullBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Meter:
    """One figure of a stage counting up to its total: a bar on a terminal, a part of the progress line elsewhere."""

    def __init__(self, owner: Progress, desc: str, *, total: int | None, unit: str) -> None:
        self.owner = owner
        self.desc = desc
        self.total = total
        self.unit = unit
        self.n = 0
        self.bar: Any = None

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
        else:
            self.owner.tick()

    def tick(self) -> None:
        self.owner.tick()

    def text(self, *, last: bool) -> str:
        """'120/509 blobs'; the last meter adds the share done: '34.0 MiB/143.2 MiB (23%)'."""
        whole = amount(self.total, self.unit) if self.total is not None else "?"
        done = size(self.n) if self.unit == BYTES else str(self.n)
        text = f"{done}/{whole}"
        if last and self.total:
            text += f" ({100 * self.n // self.total}%)"
        return text

    def close(self) -> None:
        """The stage's progress ends with its only meter (see bar())."""
        self.owner.close()

    def __enter__(self) -> Meter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _tqdm_class() -> type:
    from tqdm import tqdm

    class Bar(tqdm):  # type: ignore[misc, valid-type]
        """tqdm speaking the summary's units: whole counts, sizes in KiB, MiB and GiB."""

        @property
        def format_dict(self) -> dict[str, Any]:  # type: ignore[override]
            d = super().format_dict
            n, total, elapsed = d["n"], d["total"], d["elapsed"]
            rate = d["rate"] or (n / elapsed if elapsed else 0.0)
            d["done"] = size(n) if d["unit"] == BYTES else str(int(n))
            d["whole"] = amount(total, d["unit"]) if total else amount(n, d["unit"])
            d["speed"] = _speed(rate, d["unit"])
            return d

    return Bar


_WITH_TOTAL = "{desc}: {percentage:3.0f}%|{bar}| {done}/{whole} [{elapsed}<{remaining}, {speed}]"
_NO_TOTAL = "{desc}: {whole} [{elapsed}, {speed}]"


class Progress:
    """The progress of one stage: its meters as bars on a terminal, as a line every `every` seconds elsewhere (0: none)."""

    def __init__(
        self,
        label: str,
        *,
        quiet: bool = False,
        every: float = 0.0,
        out: TextIO | None = None,
        terminal: bool | None = None,
    ) -> None:
        self.label = line(label, 100)  # a table name comes from the source
        self.out = out if out is not None else sys.stderr
        if terminal is None:
            terminal = _isatty(self.out)
        self.mode = OFF if quiet else BARS if terminal else LINES if every > 0 else OFF
        self.every = every
        self.meters: list[Meter] = []
        self.started = self.last = time.monotonic()
        self._logging: AbstractContextManager[Any] | None = None
        self._closed = False

    @property
    def shown(self) -> bool:
        """Whether anything is shown at all: a stage may skip counting its totals when not."""
        return self.mode != OFF

    def meter(self, desc: str, *, total: int | None, unit: str) -> Meter | NullBar:
        if self.mode == OFF:
            return NullBar()
        if not self.meters:
            self.started = self.last = time.monotonic()  # the stage's work starts with its first meter
        m = Meter(self, line(desc, 100), total=total, unit=unit)
        if self.mode == BARS:
            if self._logging is None:
                # Log lines (-v, a worker's death) are printed above the bars instead of through them.
                from tqdm.contrib.logging import logging_redirect_tqdm

                self._logging = logging_redirect_tqdm()
                self._logging.__enter__()
            m.bar = _tqdm_class()(
                desc=m.desc,
                total=total,
                bar_format=_WITH_TOTAL if total else _NO_TOTAL,
                file=self.out,
                dynamic_ncols=True,
                mininterval=0.5,
                leave=False,
                unit=unit,
            )
        self.meters.append(m)
        return m

    def tick(self) -> None:
        """Write the progress line if `every` seconds have passed since the last one (off a terminal)."""
        if self.mode != LINES or not self.meters:
            return
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self.out.write(self.line(now) + "\n")
            self.out.flush()

    def line(self, now: float | None = None) -> str:
        """'pmigrate: data: 120/509 blobs, 34.0 MiB/143.2 MiB (23%), 3.4 MiB/s, 10s elapsed, 32s left'."""
        elapsed = (now if now is not None else time.monotonic()) - self.started
        parts = [m.text(last=i == len(self.meters) - 1) for i, m in enumerate(self.meters)]
        pace = self.meters[-1]
        rate = pace.n / elapsed if elapsed > 0 else 0.0
        parts.append(_speed(rate, pace.unit))
        parts.append(f"{duration(elapsed)} elapsed")
        if pace.total and rate > 0 and pace.n < pace.total:
            parts.append(f"{duration((pace.total - pace.n) / rate)} left")
        return line(f"pmigrate: {self.label}: " + ", ".join(parts))

    def close(self) -> None:
        """Clear the bars and leave the cursor at the start of a line, ready for the summary."""
        if self._closed:
            return
        self._closed = True
        bars = [m.bar for m in self.meters if m.bar is not None]
        # Bottom first, then the top one returns to its line's start. A lower bar
        # cleared last would leave the cursor at the last column of a full-width
        # line, and the summary's first line would start there and wrap.
        for b in reversed(bars):
            b.close()
        if bars:
            self.out.write("\r")
            self.out.flush()
        if self._logging is not None:
            self._logging.__exit__(None, None, None)
            self._logging = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _isatty(out: TextIO) -> bool:
    try:
        return out.isatty()
    except (AttributeError, ValueError):
        return False


def bar(*, quiet: bool, desc: str, total: int | None = None, unit: str = "item", every: float = 0.0, label: str | None = None) -> Meter | NullBar:
    """A stage with one meter: a bar on a terminal, a line every `every` seconds elsewhere (0: none)."""
    return Progress(label or desc, quiet=quiet, every=every).meter(desc, total=total, unit=unit)
