"""Text from the data (ids, keys, file names, values) made safe to show on a terminal.

A source is not trusted: an id may hold a NUL, an escape sequence or five
thousand characters, a file name invalid UTF-8 (which Python carries as lone
surrogates). shown() quotes and shortens one such value inside a message;
line() is the last guard on every line pmigrate prints, so that no control
character reaches the terminal and no line grows without bound. The JSON
report keeps full values: JSON escapes them itself.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable

SHOWN = 100  # characters of a value shown in a message
LINE = 1000  # characters of a printed line
ELLIPSIS = "…"

# A value made of these alone is shown as it is: ids, table:key items, object keys.
_PLAIN = re.compile(r"[A-Za-z0-9_.:/@+=,#~-]+")
_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(ch: str, *, quote: str = "") -> str:
    if ch == quote or ch in _ESCAPES:
        return _ESCAPES.get(ch, "\\" + ch)
    if ch.isprintable():
        return ch
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def shown(value: object, limit: int = SHOWN) -> str:
    """value as a message shows it: bare when plain, else quoted with every non-printable escaped, shortened.

    A value longer than limit keeps its start and its end (where a path has
    its file name) around a …, and says how long it is:
    'xxxx…xx' (5000 characters).
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = bytes(value).decode("utf-8", "surrogateescape")
    elif not isinstance(value, str):
        value = str(value)
    if len(value) <= limit and _PLAIN.fullmatch(value):
        return value
    head = _escaped(value, limit)
    if len(head) == len(value):
        return "'" + "".join(head) + "'"
    tail_budget = limit // 3
    head = _escaped(value, limit - tail_budget)
    tail = _escaped(itertools.islice(reversed(value), len(value) - len(head)), tail_budget)[::-1]
    return "'" + "".join(head) + ELLIPSIS + "".join(tail) + f"' ({len(value)} characters)"


def _escaped(chars: Iterable[str], budget: int) -> list[str]:
    """The escaped characters, from the first, that fit in budget: one list item per character."""
    out: list[str] = []
    used = 0
    for ch in chars:
        piece = _escape(ch, quote="'")
        used += len(piece)
        if used > budget:
            break
        out.append(piece)
    return out


def line(text: str, limit: int = LINE) -> str:
    """One printable line: non-printable characters (newlines too) escaped, at most about limit characters."""
    if len(text) <= limit and text.isprintable():
        return text
    out: list[str] = []
    used = 0
    for ch in text:
        piece = ch if ch.isprintable() else _escape(ch)
        if used + len(piece) > limit:
            out.append(f"{ELLIPSIS} ({len(text)} characters)")
            break
        out.append(piece)
        used += len(piece)
    return "".join(out)


def lines(text: str, limit: int = LINE) -> str:
    """line() for each line of a text that may span several (a traceback), keeping its line breaks."""
    return "\n".join(line(part, limit) for part in text.split("\n"))
