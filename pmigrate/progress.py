"""Progress as a subscriber: tqdm bars, or nothing with -q."""

from __future__ import annotations

import sys
from typing import Any

from pmigrate.quote import line


class NullBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, s: str) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> "NullBar":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def bar(*, quiet: bool, desc: str, total: int | None = None, unit: str = "it", unit_scale: bool = False, **kw: Any):
    """A progress bar on stderr, or a no-op one when quiet or not a terminal in CI."""
    if quiet:
        return NullBar()
    from tqdm import tqdm

    return tqdm(
        desc=line(desc, 100),  # a table name comes from the source
        total=total,
        unit=unit,
        unit_scale=unit_scale,
        unit_divisor=1024 if unit == "B" else 1000,
        file=sys.stderr,
        dynamic_ncols=True,
        mininterval=0.5,
        leave=False,
        **kw,
    )
