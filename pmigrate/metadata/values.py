"""How a value a driver returns becomes a canonical value, and back, as plikd's Go drivers read and write it.

The copier (convert.py builds its per-column functions from here) and verify
(verify/rows.py) both read values through this module, so they agree on what
a stored value means: a timestamp in a mysql ``loc=Local`` database is read in
the local zone with its daylight-saving rules, a boolean spelled ``""`` is
false, a NULL stays apart from the empty string.

What each driver holds (see the dumps):
- booleans: sqlite3 ``numeric`` 0/1, postgres ``boolean``, mysql ``tinyint(1)``;
- timestamps: sqlite3 text ``2006-01-02 15:04:05.999999999-07:00`` (go-sqlite3's
  first format: the writer's UTC offset, nanoseconds, trailing zeros trimmed;
  text without an offset is read as UTC), postgres ``timestamptz`` (µs), mysql
  ``datetime(3)``: a wall time without zone, written and read by
  go-sql-driver in the DSN's ``loc`` (default UTC; ``Local`` is the zone of the
  machine running plikd, so pmigrate must run with the same TZ);
- strings: unbounded except mysql ``varchar(n)`` (n characters).

Canonical values keep the meaning and drop the spelling: booleans and whole
numbers become ints, timestamps the UTC instant in nanoseconds (truncated,
never rounded, to the coarser precision of the two sides), text stays text.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from pmigrate.quote import shown

UTC = UTC

# Go's zero time.Time; mysql keeps it as the zero date '0000-00-00'.
GO_ZERO = datetime(1, 1, 1, tzinfo=UTC)

Convert = Callable[[Any], Any]

KIND_BOOL = "bool"
KIND_TIME = "time"
KIND_TEXT = "text"
KIND_INT = "int"  # compared as a whole number; the copier passes it as it is (other)
KIND_OTHER = "other"
NS = 1_000_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class UnfitValue(Exception):
    """A value that cannot be carried to the target column (the caller names the row)."""


# -- zones -------------------------------------------------------------------


def local_zone() -> tzinfo:
    """Go's time.Local: $TZ when set ("" is UTC), else /etc/localtime, else UTC."""
    tz = os.environ.get("TZ")
    if tz is not None:
        name = tz.lstrip(":")
        if not name or name == "UTC":
            return UTC
        try:
            if name.startswith("/"):
                with open(name, "rb") as fh:
                    return ZoneInfo.from_file(fh, key=name)
            return ZoneInfo(name)
        except Exception:  # noqa: BLE001 - Go falls back to UTC too
            return UTC
    real = os.path.realpath("/etc/localtime")
    if "/zoneinfo/" in real:
        try:
            return ZoneInfo(real.split("/zoneinfo/", 1)[1])  # named, as Go names it
        except Exception:  # noqa: BLE001 - read the file itself below
            pass
    try:
        with open("/etc/localtime", "rb") as fh:
            return ZoneInfo.from_file(fh, key="Local")
    except OSError:
        return UTC


def mysql_zone(meta) -> tzinfo:
    """The zone go-sql-driver reads and writes a mysql DSN's datetimes in (its ``loc``, default UTC).

    ``Local`` is the zone of the machine running plikd, taken here as this
    machine's ($TZ, else /etc/localtime) with its daylight-saving rules: a
    fixed offset would shift every winter (or summer) value by an hour.
    """
    from pmigrate.errors import ConfigError

    name = meta.translation().time_zone or "UTC"
    if name == "UTC":
        return UTC
    if name == "Local":
        return local_zone()
    try:
        return ZoneInfo(name)
    except Exception:  # noqa: BLE001
        raise ConfigError(f"mysql DSN has loc={name!r}, which is not a known time zone: use UTC, Local or an IANA name") from None


def zone_of(meta) -> tzinfo:
    """The zone naive timestamps of a metadata database are in: a mysql DSN's ``loc``, else UTC."""
    return mysql_zone(meta) if meta.driver == "mysql" else UTC


def zone_name(zone: tzinfo) -> str:
    return getattr(zone, "key", None) or str(zone)


# -- column kinds --------------------------------------------------------------


def column_kind(driver: str, satype: Any) -> str:
    """bool | time | text | other, from a type SQLAlchemy reflected on that driver."""
    import sqlalchemy as sa

    name = type(satype).__name__.upper()
    if isinstance(satype, sa.Boolean):
        return KIND_BOOL
    if driver == "mysql" and name == "TINYINT" and getattr(satype, "display_width", None) == 1:
        return KIND_BOOL
    if driver == "sqlite3" and name in ("NUMERIC", "BOOLEAN", "BOOL"):
        return KIND_BOOL  # gorm maps Go bool to sqlite ``numeric``
    if isinstance(satype, (sa.DateTime, sa.Date)) or name in ("DATETIME", "TIMESTAMP", "DATE"):
        return KIND_TIME
    if isinstance(satype, sa.String):
        return KIND_TEXT
    return KIND_OTHER


def compare_kind(src: tuple[str, Any], dst: tuple[str, Any]) -> str:
    """time | bool | int | text: how a column seen as (driver, type) on each side is compared."""
    import sqlalchemy as sa

    def kind(driver: str, satype: Any) -> str:
        k = column_kind(driver, satype)
        if k in (KIND_BOOL, KIND_TIME):
            return k
        return KIND_INT if isinstance(satype, sa.Integer) else KIND_TEXT

    a, b = kind(*src), kind(*dst)
    for k in (KIND_TIME, KIND_BOOL, KIND_INT):
        if k in (a, b):
            return k
    return KIND_TEXT


def text_limit(driver: str, satype: Any) -> int | None:
    """Characters a target column holds, when it is bounded (mysql varchar/char and text types)."""
    import sqlalchemy as sa

    if driver != "mysql" or not isinstance(satype, sa.String):
        return None
    name = type(satype).__name__.upper()
    # TEXT types are bounded in bytes; utf8mb4 needs at most 4 per character.
    by_bytes = {"TINYTEXT": 255 // 4, "TEXT": 65535 // 4, "MEDIUMTEXT": 16777215 // 4}
    if name in by_bytes:
        return by_bytes[name]
    if isinstance(satype, sa.Text):
        return None
    return int(satype.length) if satype.length else None


def time_fsp(driver: str, satype: Any) -> int:
    """Fractional digits a target timestamp column keeps."""
    if driver == "mysql":
        fsp = getattr(satype, "fsp", None)
        return int(fsp) if fsp is not None else 0
    if driver == "postgres":
        precision = getattr(satype, "precision", None)
        return 6 if precision is None else int(precision)
    return 9


# -- timestamps --------------------------------------------------------------

_FRACTION = re.compile(r"\.(\d+)")


def parse_sqlite_time(value: Any) -> datetime:
    """A go-sqlite3 timestamp as an aware datetime (ns truncated to µs; no offset means UTC)."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    s = value.strip()
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        raise UnfitValue(f"timestamp {shown(value)} is in no format plikd writes") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def format_sqlite_time(dt: datetime) -> str:
    """go-sqlite3's layout ``2006-01-02 15:04:05.999999999-07:00``, keeping dt's offset."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    off = dt.utcoffset() or timedelta(0)
    sign = "-" if off < timedelta(0) else "+"
    mins = abs(int(off.total_seconds())) // 60
    frac = f".{dt.microsecond:06d}".rstrip("0") if dt.microsecond else ""
    return (
        f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d} {dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}"
        f"{frac}{sign}{mins // 60:02d}:{mins % 60:02d}"
    )


def read_mysql_time(value: Any, zone: tzinfo) -> datetime:
    if isinstance(value, datetime):
        return value.replace(tzinfo=zone) if value.tzinfo is None else value
    if isinstance(value, str) and value.startswith("0000-00-00"):
        return GO_ZERO
    raise UnfitValue(f"timestamp {shown(value)} is not a datetime")


# -- booleans ------------------------------------------------------------------

_TRUE = frozenset({"1", "t", "true", "y", "yes", "on"})
_FALSE = frozenset({"0", "f", "false", "n", "no", "off", ""})


def to_bool(v: Any) -> bool | None:
    """A boolean as plikd means it; UnfitValue for a value that is none."""
    if v is None or v is True or v is False:
        return v
    if isinstance(v, (int, float)):
        return v != 0
    if isinstance(v, (bytes, str)):
        s = (v.decode() if isinstance(v, bytes) else v).strip().lower()
        if s in _TRUE:
            return True
        if s in _FALSE:
            return False
    raise UnfitValue(f"{shown(v)} is not a boolean")


# -- canonical values (verify, the copier's re-run and collision checks) --------

_INT = re.compile(r"-?\d+")
_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:[ T](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?)?"
    r"\s*(Z|[+-]\d{2}(?::?\d{2}(?::?\d{2})?)?)?"
    r"(?:\s+[A-Za-z_/+-]+)?"
)

Canon = Callable[[Any], Any]


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
    """1 or 0 for what to_bool reads as a boolean (what the copy writes); anything else as it is."""
    if v is None:
        return None
    if v.__class__ is int and (v == 0 or v == 1):
        return v
    try:
        return int(to_bool(_text(v)))  # type: ignore[arg-type]
    except UnfitValue:
        return _text(v)


def _ns(d: datetime) -> int:
    delta = d - _EPOCH
    return (delta.days * 86400 + delta.seconds) * NS + delta.microseconds * 1000


def time_ns(v: Any, *, zone: tzinfo = UTC) -> Any:
    """The UTC instant of v in nanoseconds, or v unchanged when it is not a time.

    Naive values (mysql datetime, a sqlite text without offset) are read in
    ``zone``, the zone the Go driver wrote them in (zone_of: mysql ``loc``
    with its daylight-saving rules, else UTC), as the copier reads them.
    """
    if isinstance(v, datetime):
        return _ns(v if v.tzinfo else v.replace(tzinfo=zone))
    if isinstance(v, date):
        return _ns(datetime(v.year, v.month, v.day, tzinfo=zone))
    if v.__class__ is int or v.__class__ is float:
        try:
            return _ns(parse_sqlite_time(v))  # a number in a sqlite timestamp column: Unix seconds
        except (OverflowError, OSError, ValueError):
            return v
    v = _text(v)
    if not isinstance(v, str):
        return v
    if v.startswith("0000-00-00"):
        return _ns(GO_ZERO)  # mysql's zero date holds Go's zero time
    m = _TIME.fullmatch(v.strip())
    if not m:
        return v
    y, mo, d, h, mi, s, frac, off = m.groups()
    try:
        base = datetime(int(y), int(mo), int(d), int(h or 0), int(mi or 0), int(s or 0))
    except ValueError:
        return v
    if off is None:
        ns = _ns(base.replace(tzinfo=zone))
    else:
        ns = _ns(base.replace(tzinfo=UTC)) - _ns(_EPOCH + _offset(off))
    if frac:
        ns += int(frac[:9].ljust(9, "0"))
    return ns


def _offset(text: str) -> timedelta:
    if text == "Z":
        return timedelta(0)
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    hours, minutes, seconds = int(digits[:2]), int(digits[2:4] or 0), int(digits[4:6] or 0)
    return sign * timedelta(hours=hours, minutes=minutes, seconds=seconds)


def time_canon(*, precision: int, zone: tzinfo = UTC) -> Canon:
    """Timestamps to UTC ns, truncated to ``precision`` fractional digits."""
    unit = 10 ** (9 - max(0, min(9, precision)))

    def canon(v: Any) -> Any:
        if v is None:
            return None
        ns = time_ns(v, zone=zone)
        if type(ns) is int:
            return ns - ns % unit  # floor: truncation toward the past, as MariaDB and Go do
        return ns

    return canon


def canon_for(kind: str, *, precision: int = 9, zone: tzinfo = UTC) -> Canon:
    """The canonical-value function for one column of a kind (see compare_kind)."""
    if kind == KIND_TIME:
        return time_canon(precision=precision, zone=zone)
    return {KIND_BOOL: canon_bool, KIND_INT: canon_int}.get(kind, canon_text)


def canonical(value: Any, *, kind: str, driver: str, zone: tzinfo = UTC) -> Any:
    """bool, aware UTC datetime (µs), str, int or None: one value as plikd would read it.

    The same reading as canon_for, in Python types for keys and tests;
    UnfitValue for a timestamp that is none.
    """
    if value is None:
        return None
    if kind == KIND_BOOL:
        return to_bool(value)
    if kind == KIND_TIME:
        ns = time_ns(value, zone=zone)
        if type(ns) is not int:
            raise UnfitValue(f"timestamp {shown(value)} is in no format plikd writes")
        return _EPOCH + timedelta(microseconds=ns // 1000)
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return value


def show(v: Any, kind: str) -> str:
    """A short human form of a canonical value, for problem messages."""
    if v is None:
        return "NULL"
    if kind == KIND_TIME and type(v) is int:
        secs, ns = divmod(v, NS)
        try:
            stamp = (_EPOCH + timedelta(seconds=secs)).strftime("%Y-%m-%d %H:%M:%S")
        except OverflowError:
            return str(v)
        return f"{stamp}.{ns:09d}Z" if ns else f"{stamp}Z"
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."
