"""Value conversion between drivers, as plikd's Go drivers write and read them.

What each driver holds (see the dumps):
- booleans: sqlite3 ``numeric`` 0/1, postgres ``boolean``, mysql ``tinyint(1)``;
- timestamps: sqlite3 text ``2006-01-02 15:04:05.999999999-07:00`` (go-sqlite3's
  first format: the writer's UTC offset, nanoseconds, trailing zeros trimmed;
  text without an offset is read as UTC), postgres ``timestamptz`` (µs), mysql
  ``datetime(3)``: a wall time without zone, written and read by
  go-sql-driver in the DSN's ``loc`` (default UTC; ``Local`` is the zone of the
  machine running plikd, so pmigrate must run with the same TZ);
- strings: unbounded except mysql ``varchar(n)`` (n characters).

Converters are built once per column, so the per-row work is one call per
column that needs one, and nothing for the others. Precision is truncated,
never rounded, to the coarser side: a timestamp never moves to a later second.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone, tzinfo
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
KIND_OTHER = "other"


class ValueError_(Exception):
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
        raise ValueError_(f"timestamp {shown(value)} is in no format plikd writes") from None
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


def _mysql_in(value: Any, zone: tzinfo) -> datetime:
    if isinstance(value, datetime):
        return value.replace(tzinfo=zone) if value.tzinfo is None else value
    if isinstance(value, str) and value.startswith("0000-00-00"):
        return GO_ZERO
    raise ValueError_(f"timestamp {shown(value)} is not a datetime")


_DIGITS = re.compile(r"\d*")


def _sqlite_text_to_pg(v: Any) -> Any:
    """go-sqlite3 text straight to a postgres timestamptz input: only the ns digits cut (µs kept, never rounded).

    The target session runs in UTC, so text without an offset means UTC there too, as in go-sqlite3.
    """
    if v.__class__ is str:
        if len(v) > 26 and v[19:20] == ".":
            end = _DIGITS.match(v, 20).end()  # type: ignore[union-attr]
            if end > 26:
                return v[:26] + v[end:]
        return v
    return None if v is None else parse_sqlite_time(v)


def time_converter(*, src: str, dst: str, src_zone: tzinfo, dst_zone: tzinfo, dst_fsp: int) -> Convert | None:
    """None when values pass unchanged."""
    if src == "sqlite3" and dst == "sqlite3":
        return None  # the text as is: ns and offset survive
    if src == "sqlite3" and dst == "postgres" and dst_fsp >= 6:
        return _sqlite_text_to_pg

    if src == "sqlite3":
        read: Convert = parse_sqlite_time
    elif src == "mysql":

        def read(v: Any, _z: tzinfo = src_zone) -> datetime:
            return _mysql_in(v, _z)

    else:

        def read(v: Any) -> datetime:
            return v if v.tzinfo else v.replace(tzinfo=UTC)

    if dst == "sqlite3":

        def conv(v: Any) -> Any:
            return None if v is None else format_sqlite_time(read(v))

        return conv

    if dst == "mysql":
        step = 10 ** (6 - min(dst_fsp, 6))
        if src == "sqlite3":
            return _sqlite_text_to_mysql(dst_zone, dst_fsp, slow=_to_mysql(read, dst_zone, step))
        return _to_mysql(read, dst_zone, step)

    # postgres: an aware datetime; psycopg sends the instant.
    if src == "postgres":
        return None

    def conv(v: Any) -> Any:
        return None if v is None else read(v)

    return conv


def _to_mysql(read: Convert, dst_zone: tzinfo, step: int) -> Convert:
    """Any source timestamp as a naive datetime in the DSN's zone, cut to the column's precision."""

    def conv(v: Any) -> Any:
        if v is None:
            return None
        dt = read(v)
        if dt == GO_ZERO:
            return "0000-00-00 00:00:00"
        dt = dt.astimezone(dst_zone).replace(tzinfo=None)
        if dt.microsecond % step:
            dt = dt.replace(microsecond=dt.microsecond - dt.microsecond % step)
        return dt

    return conv


_SQLITE_TIME = re.compile(r"(\d{4}-\d\d-\d\d[ T]\d\d)(:[0-5]\d:[0-5]\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?")


_UTC_NAMES = {"UTC", "Etc/UTC", "Etc/UCT", "UCT", "Etc/Universal", "Universal", "Etc/Zulu", "Zulu", "GMT", "Etc/GMT", "Etc/GMT0", "GMT0"}


def _fixed_offset(zone: tzinfo) -> timedelta | None:
    """The offset of a zone that never changes (UTC, a fixed offset), else None."""
    if getattr(zone, "key", None) in _UTC_NAMES:
        return timedelta(0)
    if isinstance(zone, timezone):
        return zone.utcoffset(None)
    return None


def _sqlite_text_to_mysql(dst_zone: tzinfo, dst_fsp: int, *, slow: Convert) -> Convert:
    """go-sqlite3 text to mysql datetime text without a datetime per value.

    A zone change moves whole hours almost always: the shifted hour
    (``2025-07-01 02`` at +02:00 -> ``2025-07-01 00`` in UTC) is computed once
    per source hour and offset, and minutes, seconds and the fraction (cut to
    the column's digits, never rounded) are copied as they are. An hour whose
    shift is not whole (a zone with a :30 offset, a change inside it) and any
    other text take the general path.
    """
    hours: dict[tuple[str, str | None], str | None] = {}
    match = _SQLITE_TIME.fullmatch
    fsp = min(dst_fsp, 6)

    def shifted(hour: str, off: str | None) -> str | None:
        try:
            start = parse_sqlite_time(f"{hour}:00:00{off or ''}")
        except ValueError_:
            return None
        if start.year < 1000 or start.year > 9998:  # Go's zero time and the edges keep their own rules
            return None
        a = start.astimezone(dst_zone)
        b = (start + timedelta(seconds=3599)).astimezone(dst_zone)
        if a.minute or a.second or (b.replace(tzinfo=None) - a.replace(tzinfo=None)) != timedelta(seconds=3599):
            return None
        return a.strftime("%Y-%m-%d %H")

    fixed = _fixed_offset(dst_zone)
    days: dict[tuple[str, str | None], tuple[str, str, str, int] | None] = {}

    def around(day: str, off: str | None) -> tuple[str, str, str, int] | None:
        """(day before, day, day after, hours to add) for a fixed target zone; None: the general path."""
        try:
            start = parse_sqlite_time(f"{day} 00:00:00{off or ''}")
        except ValueError_:
            return None
        shift = fixed - (start.utcoffset() or timedelta(0))  # type: ignore[operator]
        if start.year < 1000 or start.year > 9998 or shift % timedelta(hours=1):
            return None
        d = start.date()
        return (d - timedelta(days=1)).isoformat(), d.isoformat(), (d + timedelta(days=1)).isoformat(), shift // timedelta(hours=1)

    def conv(v: Any) -> Any:
        if v.__class__ is not str or (m := match(v)) is None:
            return None if v is None else slow(v)
        hour, rest, frac, off = m.groups()
        if fixed is not None:
            key = (hour[:10], off)
            t = days.get(key, "")
            if t == "":
                if len(days) > 100_000:
                    days.clear()
                t = days[key] = around(hour[:10], off)
            h = int(hour[11:13])
            if t is not None and h < 24:
                h += t[3]
                head = f"{t[0 if h < 0 else 2 if h > 23 else 1]} {h % 24:02d}"
                return f"{head}{rest}.{frac[:fsp]}" if fsp and frac else head + rest
        key = (hour, off)
        head = hours.get(key, "")
        if head == "":
            if len(hours) > 100_000:
                hours.clear()  # memory stays flat whatever the span of the data
            head = hours[key] = shifted(hour, off)
        if head is None:
            return slow(v)
        if fsp and frac:
            return f"{head}{rest}.{frac[:fsp]}"
        return head + rest

    return conv


# -- booleans ------------------------------------------------------------------

_TRUE = {"1", "t", "true", "y", "yes", "on"}
_FALSE = {"0", "f", "false", "n", "no", "off", ""}


def to_bool(v: Any) -> bool | None:
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
    raise ValueError_(f"{shown(v)} is not a boolean")


def bool_converter(*, src: str, dst: str) -> Convert | None:
    if dst == "postgres":
        # Rows reach postgres through COPY, whose boolean input takes 0/1 as well as t/f.
        return None

    def as_int(v: Any) -> Any:
        if v is None:
            return None
        if v.__class__ is int and (v == 0 or v == 1):
            return v
        return int(to_bool(v))  # type: ignore[arg-type]

    return None if src == dst else as_int


# -- text ----------------------------------------------------------------------


def text_converter(*, dst: str, limit: int | None) -> Convert | None:
    """Refuse what the target would cut or reject; never truncate."""
    if limit is not None:

        def conv(v: Any) -> Any:
            if v is not None and v.__class__ is str and len(v) > limit:
                raise ValueError_(f"{len(v)} characters do not fit the target's {limit}")
            return v

        return conv
    return None


def column_converter(
    *,
    kind: str,
    src: str,
    dst: str,
    src_zone: tzinfo = UTC,
    dst_zone: tzinfo = UTC,
    dst_fsp: int = 9,
    limit: int | None = None,
) -> Convert | None:
    """The per-value function for one column, or None when values pass unchanged."""
    if kind == KIND_BOOL:
        return bool_converter(src=src, dst=dst)
    if kind == KIND_TIME:
        return time_converter(src=src, dst=dst, src_zone=src_zone, dst_zone=dst_zone, dst_fsp=dst_fsp)
    if kind == KIND_TEXT:
        return text_converter(dst=dst, limit=limit)
    return None


# -- canonical form (comparisons in tests and verify) --------------------------


def canonical(value: Any, *, kind: str, driver: str, zone: tzinfo = UTC) -> Any:
    """bool, aware UTC datetime (µs), str, int or None: one value as plikd would read it."""
    if value is None:
        return None
    if kind == KIND_BOOL:
        return to_bool(value)
    if kind == KIND_TIME:
        if driver == "sqlite3":
            return parse_sqlite_time(value).astimezone(UTC)
        if driver == "mysql":
            return _mysql_in(value, zone).astimezone(UTC)
        return value.astimezone(UTC)
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return value
