"""Refusals before the first write, each naming what to fix.

A target this source did not fill (unless --merge), values the target cannot
hold (longer than a mysql varchar, text with a NUL for postgres; skipped row
by row with --ignore-errors), a journal that cannot keep the secret the SSE-C
keys derive from.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pmigrate import ownership
from pmigrate.errors import ConfigError
from pmigrate.metadata import dialects
from pmigrate.metadata import values as V
from pmigrate.options import RunOptions
from pmigrate.quote import shown

if TYPE_CHECKING:
    from pmigrate.metadata.plan import Plan, TablePlan


# Offending values named in a refusal before the user is sent to --ignore-errors.
MAX_NAMED = 5


def target_limits(plan: Plan, t: TablePlan) -> dict[str, int]:
    """Characters each bounded target column holds (mysql varchar); {} when unknown yet."""
    types = t.dst_types if t.dst_types is not None else t.planned_types
    out = {}
    for c in t.columns:
        ty = types.get(c.name)
        limit = V.text_limit(plan.dst_driver, ty) if ty is not None else None
        if limit is not None and c.kind == V.KIND_TEXT or (limit is not None and c.kind == V.KIND_OTHER):
            out[c.name] = limit
    return out


def check_owner(owner: ownership.Ownership, where: str, source: str, *, opts: RunOptions) -> None:
    """Refuse a target this source did not fill (unless --merge), and --prune anywhere but in one it did."""
    if owner.state in (ownership.FOREIGN, ownership.OTHER):
        if not opts.merge:
            raise ownership.refuse(what="database", where=where, source=source, found=owner)
        if opts.prune:
            raise ConfigError(
                f"--prune deletes rows only in a target pmigrate filled from this source, and {where} is not one: "
                "drop --prune to merge without deleting"
            )


def keys_journal(plan: Plan, dst: Any, *, opts: RunOptions) -> tuple[Any, str]:
    """Where the secret of the SSE-C keys this copy writes is kept: the target's blob journal (checked, not written)."""
    from pmigrate.journal import Journal, locate

    files = next((t for t in plan.tables if t.name == "files"), None)
    if files is None or "backend_details" not in files.names:
        raise ConfigError(
            "the target uses SSE = \"SSE-C\" and the source's files have no SSE-C keys, nor a backend_details column "
            "to hold the ones pmigrate would make: migrate to a target with SSE = \"\" or \"S3\""
        )
    path, identity = locate(dst, opts.journal)
    journal = Journal.peek(path, identity=identity)  # refuses another target's journal
    if journal is not None:
        journal.close()
    return path, identity


def _length_sql(driver: str) -> str:
    return "LENGTH" if driver == "sqlite3" else "CHAR_LENGTH"


def check_lengths(plan: Plan, *, opts: RunOptions) -> None:
    """Values longer than a mysql varchar: refused before anything is written (or listed for --ignore-errors)."""
    sd = plan.src_driver
    q = lambda n: dialects.quote(sd, n)  # noqa: E731
    found: list[str] = []
    with plan.src_engine.connect() as c:
        for t in plan.tables:
            limits = target_limits(plan, t)
            if not limits or not t.pk:
                continue
            fn = _length_sql(sd)
            cond = " OR ".join(f"{fn}({q(col)}) > {n}" for col, n in limits.items())
            lens = ", ".join(f"{fn}({q(col)})" for col in limits)
            pk = ", ".join(q(k) for k in t.pk)
            sql = f"SELECT {pk}, {lens} FROM {q(t.name)} WHERE {cond}"
            if not opts.ignore_errors:
                sql += f" LIMIT {MAX_NAMED}"
            for row in c.exec_driver_sql(sql):
                key = shown("/".join(str(v) for v in row[: len(t.pk)]))
                for (col, n), length in zip(limits.items(), row[len(t.pk) :]):
                    if length is not None and length > n:
                        found.append(f"{t.name} {'/'.join(t.pk)}={key} column {col}: {length} characters, the target holds {n}")
    _refuse_unless_ignored(found, opts=opts, what="values too long for the mysql target", fix="Shorten them at the source")
    plan.oversized = found


def check_nuls(plan: Plan, *, opts: RunOptions) -> None:
    """Text holding a NUL character, which postgres cannot store: refused, or skipped row by row."""
    sd = plan.src_driver
    q = lambda n: dialects.quote(sd, n)  # noqa: E731
    has_nul = (lambda col: f"instr({q(col)}, char(0)) > 0") if sd == "sqlite3" else (lambda col: f"LOCATE(CHAR(0), {q(col)}) > 0")
    found: list[str] = []
    with plan.src_engine.connect() as c:
        for t in plan.tables:
            cols = [col.name for col in t.columns if col.kind == V.KIND_TEXT]
            if not cols or not t.pk:
                continue
            pk = ", ".join(q(k) for k in t.pk)
            flags = ", ".join(has_nul(col) for col in cols)
            where = " OR ".join(has_nul(col) for col in cols)  # one scan of the table for all its columns
            sql = f"SELECT {pk}, {flags} FROM {q(t.name)} WHERE {where}"
            for row in c.exec_driver_sql(sql):
                key = shown("/".join(map(str, row[: len(t.pk)])))
                for col, flag in zip(cols, row[len(t.pk) :]):
                    if flag:
                        plan.nul_columns.add((t.name, col))
                        found.append(f"{t.name} {'/'.join(t.pk)}={key} column {col}")
    _refuse_unless_ignored(found, opts=opts, what="text holding a NUL character, which postgres cannot store", fix="Clean it at the source")


def _refuse_unless_ignored(found: list[str], *, opts: RunOptions, what: str, fix: str) -> None:
    """Rows the target cannot store: ConfigError naming the first of them, unless --ignore-errors skips them."""
    if found and not opts.ignore_errors:
        raise ConfigError(
            f"{what}; nothing written: {'; '.join(found[:MAX_NAMED])}. "
            f"{fix}, or pass --ignore-errors to skip those rows (listed in the report)"
        )
