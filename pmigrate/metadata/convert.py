"""The copier's per-column value functions: a source driver's value as the target driver stores it.

Each reads a value as values.py does (so verify reads the copy back the way
it was written) and writes it the target's way. Converters are built once per
column, so the per-row work is one call per column that needs one, and nothing
for the others. Precision is truncated, never rounded, to the coarser side: a
timestamp never moves to a later second.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone, tzinfo
from typing import TYPE_CHECKING, Any

from pmigrate.metadata import values as V
from pmigrate.metadata.prechecks import target_limits
from pmigrate.metadata.rawtext import RawText
from pmigrate.metadata.values import (
    GO_ZERO,
    KIND_BOOL,
    KIND_TEXT,
    KIND_TIME,
    UTC,
    Convert,
    UnfitValue,
    format_sqlite_time,
    parse_sqlite_time,
    read_mysql_time,
    to_bool,
)
from pmigrate.quote import shown

if TYPE_CHECKING:
    from pmigrate.metadata.plan import Plan, TablePlan

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
            return read_mysql_time(v, _z)

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
        except UnfitValue:
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
        except UnfitValue:
            return None
        shift = fixed - (start.utcoffset() or timedelta(0))  # type: ignore[operator]
        if start.year < 1000 or start.year > 9998 or shift % timedelta(hours=1):
            return None
        d = start.date()
        return (d - timedelta(days=1)).isoformat(), d.isoformat(), (d + timedelta(days=1)).isoformat(), shift // timedelta(hours=1)

    def head_of(hour: str, off: str | None) -> str | None:
        """The target's hour for a source hour and offset; None: the general path."""
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
                return f"{t[0 if h < 0 else 2 if h > 23 else 1]} {h % 24:02d}"
        return shifted(hour, off)

    # Hours kept: a fixed zone recomputes a forgotten hour from its day cheaply, so it keeps fewer.
    keep = 100_000 if fixed is None else 1_024

    def conv(v: Any) -> Any:
        if v.__class__ is not str or (m := match(v)) is None:
            return None if v is None else slow(v)
        hour, rest, frac, off = m.groups()
        # One lookup per value: each source hour and offset is shifted once, then kept.
        head = hours.get((hour, off), "")
        if head == "":
            if len(hours) > keep:
                hours.clear()  # memory stays flat whatever the span of the data
            head = hours[(hour, off)] = head_of(hour, off)
        if head is None:
            return slow(v)
        if fsp and frac:
            return f"{head}{rest}.{frac[:fsp]}"
        return head + rest

    return conv


def bool_converter(*, src: str, dst: str) -> Convert | None:
    """Booleans as to_bool reads them (``""`` is false), 0/1 in the target; None when they pass unchanged."""
    if src == dst:
        return None

    def as_int(v: Any) -> Any:
        if v is None:
            return None
        if v.__class__ is int and (v == 0 or v == 1):
            return v  # postgres COPY's boolean input takes 0/1 as well as t/f
        return int(to_bool(v))  # type: ignore[arg-type]

    return as_int


# -- text ----------------------------------------------------------------------


def text_converter(*, dst: str, limit: int | None) -> Convert | None:
    """Refuse what the target would cut or reject; never truncate."""
    if limit is not None:

        def conv(v: Any) -> Any:
            if v is not None and v.__class__ is str and len(v) > limit:
                raise UnfitValue(f"{len(v)} characters do not fit the target's {limit}")
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


# -- rows ----------------------------------------------------------------------


class BadRow(Exception):
    def __init__(self, item: str, message: str) -> None:
        super().__init__(message)
        self.item = item
        self.message = message


def _item(t: TablePlan, row: Sequence[Any], names: Sequence[str]) -> str:
    if not t.pk:
        return f"{t.name}:(no primary key)"
    idx = [names.index(k) for k in t.pk]
    return f"{t.name}:" + "/".join(str(row[i]) for i in idx)


def row_converters(plan: Plan, t: TablePlan) -> tuple[list[tuple[int, Any]], list[tuple[int, int]]]:
    """(column index, value function) for columns that change on the way; (index, max characters) to check."""
    limits = target_limits(plan, t)
    convs, checks = [], []
    for i, c in enumerate(t.columns):
        fsp = V.time_fsp(plan.dst_driver, c.dst_type) if c.dst_type is not None else 9
        if c.name in limits:
            checks.append((i, limits[c.name]))
        if c.kind == V.KIND_TEXT:
            if (t.name, c.name) in plan.nul_columns:
                convs.append((i, _no_nul))
            continue  # text passes as is; its length is checked inline
        f = column_converter(
            kind=c.kind,
            src=plan.src_driver,
            dst=plan.dst_driver,
            src_zone=plan.src_zone,
            dst_zone=plan.dst_zone,
            dst_fsp=fsp,
        )
        if f is not None:
            convs.append((i, f))
    return convs, checks


def _no_nul(value: Any) -> Any:
    if value.__class__ is str and "\x00" in value:
        raise V.UnfitValue("holds a NUL character, which postgres text cannot store")
    return value


def _too_long(value: Any, limit: int) -> Any:
    raise V.UnfitValue(f"{len(value)} characters do not fit the target's {limit}")


def row_function(convs: list[tuple[int, Any]], checks: list[tuple[int, int]], width: int) -> Any:
    """One compiled function converting a whole row: no per-column loop, length checks inline."""
    env: dict[str, Any] = {f"f{i}": f for i, f in convs}
    env["too_long"] = _too_long
    limits = dict(checks)
    parts = []
    for i in range(width):
        x = f"f{i}(r[{i}])" if f"f{i}" in env else f"r[{i}]"
        if i in limits:
            n = limits[i]
            x = f"(v if (v := {x}).__class__ is not str or len(v) <= {n} else too_long(v, {n}))"
        parts.append(x)
    code = f"def row(r):\n    return ({', '.join(parts)},)\n"
    exec(compile(code, "<pmigrate row converter>", "exec"), env)  # noqa: S102 - built from column indexes only
    return env["row"]


def convert_row(
    row: Sequence[Any],
    convs: list[tuple[int, Any]],
    checks: list[tuple[int, int]],
    parent_skips: list[tuple[int, set]],
    names: Sequence[str],
    t: TablePlan,
    raw_to: str | None = None,
) -> tuple:
    """The slow path, row by row: names the table, key and column of a value that cannot go.

    ``raw_to``: the target's driver when the batch holds text that is not
    UTF-8 (RawText, from a sqlite3 source): it goes as it is into sqlite3,
    and stops the row for postgres and mysql, which store UTF-8 only.
    """
    for i, keys in parent_skips:
        if row[i] in keys:
            raise BadRow(_item(t, row, names), f"{names[i]} {shown(row[i])} names a row skipped above")
    if raw_to not in (None, "sqlite3"):
        for i, v in enumerate(row):
            if v.__class__ is RawText:
                raise BadRow(
                    _item(t, row, names),
                    f"column {names[i]}: text that is not valid UTF-8 ({shown(v)}), which {raw_to} cannot store",
                )
    r = list(row)
    for i, f in convs:
        if raw_to is not None and r[i].__class__ is RawText:
            continue  # into sqlite3 as it is
        try:
            r[i] = f(r[i])
        except (V.UnfitValue, ValueError, TypeError, OverflowError) as exc:
            raise BadRow(_item(t, row, names), f"column {names[i]}: {exc}") from None
    for i, n in checks:
        v = r[i]
        if v.__class__ is str and len(v) > n:
            raise BadRow(_item(t, row, names), f"column {names[i]}: {len(v)} characters do not fit the target's {n}")
    return tuple(r)
