"""Counts and sizes in words: '1 row', '2 rows', never '1 rows' or 'row(s)'; '143.2 MiB', never '150.2 MB'."""

from __future__ import annotations


def plural(n: int, noun: str, *, width: int = 0) -> str:
    """n and the noun, singular for exactly one; width right-aligns the number in a column."""
    return f"{n:>{width}} {noun if n == 1 else noun + 's'}"


def size(n: float) -> str:
    """Bytes in binary units, as the summary, the bars and the progress lines all write them."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
