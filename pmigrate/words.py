"""Counts in words: '1 row', '2 rows', never '1 rows' or 'row(s)'."""

from __future__ import annotations


def plural(n: int, noun: str, *, width: int = 0) -> str:
    """n and the noun, singular for exactly one; width right-aligns the number in a column."""
    return f"{n:>{width}} {noun if n == 1 else noun + 's'}"
