"""Canonical row values: what must survive a copy between drivers, and nothing else.

The copier legitimately changes how a value is spelled (booleans as 0/1,
true/false or tinyint; timestamps as sqlite text with a UTC offset and
nanoseconds, postgres timestamptz in microseconds, mysql datetime(3) in
milliseconds), never what it means. Canonical values keep the meaning:
booleans and whole numbers become ints, timestamps the UTC instant in
nanoseconds truncated to the coarser precision of the two sides, text stays
text, and NULL stays apart from the empty string.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from sqlalchemy import types as sqltypes

NS = 1_000_000_000
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_TRUE = frozenset(("1", "t", "true", "y", "yes", "on"))
_FALSE = frozenset(("0", "f", "false", "n", "no", "off"))
_INT = re.compile(r"-?\d+")
_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:[ T](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?)?"
    r"\s*(Z|[+-]\d{2}(?::?\d{2}(?::?\d{2})?)?)?"
    r"(?:\s+[A-Za-z_/+-]+)?"
)

Canon = Callable[[Any], Any]


# -- column kinds ------------------------------------------------------------


def kind_of(type_: Any, *, driver: str) -> str:
    """'time', 'bool', 'int' or 'text' for one reflected column type."""
    if isinstance(type_, (sqltypes.DateTime, sqltypes.Date)):
        return "time"
    if isinstance(type_, sqltypes.Boolean):
        return "bool"
    name = type(type_).__name__.upper()
    if driver == "mysql" and name == "TINYINT" and getattr(type_, "display_width", None) == 1:
        return "bool"
    if driver == "sqlite3" and name in ("NUMERIC", "BOOL", "BOOLEAN"):
        return "bool"  # gorm's sqlite booleans are `numeric` holding 0/1
    if isinstance(type_, sqltypes.Integer):
        return "int"
    return "text"


def unify(a: str, b: str) -> str:
    """The kind of a column seen as kind a on one side and b on the other."""
    for k in ("time", "bool", "int"):
        if k in (a, b):
            return k
    return "text"


def precision_of(type_: Any, *, driver: str) -> int:
    """Fractional digits a timestamp column keeps: sqlite text ns, postgres µs, mysql fsp."""
    if driver == "sqlite3":
        return 9
    if driver == "mysql":
        fsp = getattr(type_, "fsp", None)
        return int(fsp) if fsp is not None else 0
    p = getattr(type_, "precision", None)
    return int(p) if p is not None else 6


# -- values ------------------------------------------------------------------


def _number(v: Any) -> Any:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, float):
        return int(v) if v.is_integer() else repr(v)
    if isinstance(v, Decimal):
        return int(v) if v == v.to_integral_value() else str(v.normalize())
    return v


def _text(v: Any) -> Any:
    if isinstance(v, memoryview):
        v = v.tobytes()
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).decode("utf-8", "surrogateescape")
    return _number(v)


def canon_text(v: Any) -> Any:
    if v is None or isinstance(v, (str, int)) and not isinstance(v, bool):
        return v
    return _text(v)


def canon_int(v: Any) -> Any:
    if v is None or type(v) is int:
        return v
    v = _text(v)
    if isinstance(v, str) and _INT.fullmatch(v.strip()):
        return int(v)
    return v


def canon_bool(v: Any) -> Any:
    if v is None or type(v) is int:
        return v
    v = _text(v)
    if isinstance(v, str):
        low = v.strip().lower()
        if low in _TRUE:
            return 1
        if low in _FALSE:
            return 0
    return v


def time_ns(v: Any, *, naive_tz: dt.tzinfo | None) -> Any:
    """The UTC instant of v in nanoseconds, or v unchanged when it is not a time.

    Naive values (mysql datetime, a sqlite text without offset) are read in
    naive_tz: the zone the Go driver wrote them in (mysql `loc=`), else UTC;
    None means this machine's local zone, DST included.
    """
    if isinstance(v, dt.datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=naive_tz) if naive_tz is not None else v.astimezone()
        delta = v - _EPOCH
        return (delta.days * 86400 + delta.seconds) * NS + delta.microseconds * 1000
    if isinstance(v, dt.date):
        return time_ns(dt.datetime(v.year, v.month, v.day), naive_tz=naive_tz)
    v = _text(v)
    if not isinstance(v, str):
        return v
    m = _TIME.fullmatch(v.strip())
    if not m:
        return v
    y, mo, d, h, mi, s, frac, off = m.groups()
    try:
        base = dt.datetime(int(y), int(mo), int(d), int(h or 0), int(mi or 0), int(s or 0))
    except ValueError:
        return v
    if off is None:
        base = base.replace(tzinfo=naive_tz) if naive_tz is not None else base.astimezone()
        delta = base - _EPOCH
    else:
        delta = base.replace(tzinfo=dt.UTC) - _EPOCH - _offset(off)
    ns = (delta.days * 86400 + delta.seconds) * NS + delta.microseconds * 1000
    if frac:
        ns += int(frac[:9].ljust(9, "0"))
    return ns


def _offset(text: str) -> dt.timedelta:
    if text == "Z":
        return dt.timedelta(0)
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    hours, minutes, seconds = int(digits[:2]), int(digits[2:4] or 0), int(digits[4:6] or 0)
    return sign * dt.timedelta(hours=hours, minutes=minutes, seconds=seconds)


def time_canon(*, precision: int, naive_tz: dt.tzinfo | None) -> Canon:
    """Timestamps to UTC ns, truncated to `precision` fractional digits."""
    unit = 10 ** (9 - max(0, min(9, precision)))

    def canon(v: Any) -> Any:
        if v is None:
            return None
        ns = time_ns(v, naive_tz=naive_tz)
        if type(ns) is int:
            return ns - ns % unit  # floor: truncation toward the past, as MariaDB and Go do
        return ns

    return canon


def canon_for(kind: str, *, precision: int = 9, naive_tz: dt.tzinfo | None = dt.UTC) -> Canon:
    if kind == "time":
        return time_canon(precision=precision, naive_tz=naive_tz)
    return {"bool": canon_bool, "int": canon_int}.get(kind, canon_text)


def show(v: Any, kind: str) -> str:
    """A short human form of a canonical value, for problem messages."""
    if v is None:
        return "NULL"
    if kind == "time" and type(v) is int:
        secs, ns = divmod(v, NS)
        try:
            stamp = (_EPOCH + dt.timedelta(seconds=secs)).strftime("%Y-%m-%d %H:%M:%S")
        except OverflowError:
            return str(v)
        return f"{stamp}.{ns:09d}Z" if ns else f"{stamp}Z"
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."
