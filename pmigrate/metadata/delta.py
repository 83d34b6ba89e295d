"""Which rows a merge into a target pmigrate already filled must write: those the source changed.

A second pass into a target that holds the first pass's rows writes only the
rows missing there (inserted) or different there (updated); the rest are
left alone, and counted unchanged. Which rows those are comes from the row
comparison of ``pmigrate verify`` (metadata/compare.py): both sides streamed in key
order and merge-joined, one batch of each in memory. Only the keys of rows
that differ are held, up to MAX_KEYS per table; a table with more differing
rows is written whole, by primary key as before (its inserted and updated
counts then come from the audit).

The audit reads the source after the copy's snapshot began: a row plikd
changes in between is seen as changed and written from the snapshot, and its
newer state is for the next pass, as any change after the snapshot.
The same comparison names the target's rows the source lacks (plikd purged
them), so that they are counted, or deleted with --prune, without another
read of both tables.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pmigrate.batching import batched
from pmigrate.metadata import compare

IN_KEYS = 500  # keys per IN (...) when only the differing rows are read again
MAX_KEYS = 250_000  # differing keys held per table (a few tens of MB) before it is written whole
INSERTED, UPDATED = "missing", "changed"  # the audit's names


@dataclass
class TableChanges:
    """The rows of one table that differ on the target, by canonical primary key."""

    key_columns: list[str]
    canons: list[Any]  # the audit's canonical form of each key column, source side
    kinds: dict[tuple, str] = field(default_factory=dict)  # key -> INSERTED | UPDATED
    whole: bool = False  # too many to hold: every row is written
    missing: int = 0  # the audit's counts
    changed: int = 0
    inserted: int = 0  # rows written, by kind
    updated: int = 0
    gone: list[tuple] | None = None  # target keys, as read, of rows the source lacks; None: not known

    @property
    def none(self) -> bool:
        """Nothing differs: the table need not even be read again."""
        return not self.whole and not self.kinds

    def note(self, kind: str, row: tuple, key_at: Sequence[int]) -> None:
        if kind == "extra":
            if self.gone is not None:
                self.gone.append(tuple(row[i] for i in key_at))
                if len(self.gone) > MAX_KEYS:
                    self.gone = None  # the copy finds them itself
            return
        if self.whole:
            return
        self.kinds[tuple(row[i] for i in key_at)] = kind
        if len(self.kinds) > MAX_KEYS:
            self.whole, self.kinds = True, {}

    def filter(self, names: Sequence[str]) -> Callable[[list], list]:
        """A function keeping, of a batch of source rows (columns ``names``), those to write; counting them."""
        at = [names.index(c) for c in self.key_columns]
        canons = self.canons
        kinds = self.kinds

        def keep(batch: list) -> list:
            if self.whole:
                return batch
            out = []
            for row in batch:
                kind = kinds.get(tuple([c(row[i]) for c, i in zip(canons, at)]))
                if kind is not None:
                    out.append(row)
                    if kind == INSERTED:
                        self.inserted += 1
                    else:
                        self.updated += 1
            return out

        return keep

    def figures(self, written: int, source: int) -> dict[str, int]:
        """inserted / updated / unchanged; ``written``: rows the load wrote of ``source`` it read."""
        if self.whole:
            return {"inserted": self.missing, "updated": self.changed, "unchanged": max(0, source - self.missing - self.changed)}
        return {"inserted": self.inserted, "updated": self.updated, "unchanged": max(0, written - self.inserted - self.updated)}


def plan_changes(
    plan: Any, *, batch_size: int, fixes: dict[str, Callable[[Sequence[str]], Any]] | None = None
) -> dict[str, TableChanges]:
    """Per table with a primary key: the rows the source holds that the target lacks or holds otherwise.

    ``plan``: the metadata copier's Plan; ``fixes``: what the copy changes in
    a table's rows (as verify's, e.g. SSE-C keys pmigrate writes into files).
    """
    src = compare.Side(engine=plan.src_engine, driver=plan.src_driver, zone=plan.src_zone)
    dst = compare.Side(engine=plan.dst_engine, driver=plan.dst_driver, zone=plan.dst_zone)
    wanted = {t.name: t for t in plan.tables if t.pk}
    plans, _problems = compare.plan_tables(src, dst)
    out: dict[str, TableChanges] = {}
    for tp in plans:
        t = wanted.get(tp.name)
        if t is None or not tp.key or [tp.columns[i] for i in tp.key] != list(t.pk):
            continue  # no key to write by, or one the audit reads otherwise: written whole as before
        if fixes and tp.name in fixes:
            tp.src_fix = fixes[tp.name](tp.columns)
        ch = TableChanges(key_columns=list(t.pk), canons=[tp.src_canon[i] for i in tp.key], gone=[])
        res = compare.differences(tp, src, dst, batch_size=batch_size, on_diff=lambda kind, row, ch=ch, at=tp.key: ch.note(kind, row, at))
        ch.missing, ch.changed = res.missing, res.changed
        # A mysql target's collation may take two keys as read for one: it finds its rows gone itself.
        if not res.as_read or plan.dst_driver == "mysql":
            ch.gone = None
        out[tp.name] = ch
    return out


def kept(stream: Iterator[list], keep: Callable[[list], list], *, on_dropped: Callable[[int], Any]) -> Iterator[list]:
    """The batches of ``stream`` with only the rows ``keep`` keeps, empty ones left out; dropped rows counted."""
    try:
        for batch in stream:
            out = keep(batch)
            if len(out) != len(batch):
                on_dropped(len(batch) - len(out))
            if out:
                yield out
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()  # now, while the source's connection is open


def gone(ch: TableChanges | None, writer: Any, table: str, pk: Sequence[str], *, delete: bool, batch: int) -> int | None:
    """Rows of the target the source lacks, as the comparison found them: deleted with ``delete``; None if not known."""
    if ch is None or ch.gone is None:
        return None
    if delete:
        for i in range(0, len(ch.gone), batch):
            writer.delete(table, pk, ch.gone[i : i + batch])
    return len(ch.gone)


def rows_to_write(
    ch: TableChanges,
    reader: Any,
    sql: str,
    *,
    names: Sequence[str],
    key_text: bool,
    batch: int,
    total: int,
    on_dropped: Callable[[int], Any],
) -> Iterator[list]:
    """The source rows a merge writes, in batches, counted by kind.

    Read again by key (``IN (...)``, a few hundred keys a query) when the
    key is one text column, whose value as read is its canonical form; else
    the table is read whole and filtered. ``sql``: the copy's SELECT of the
    table, aliased ``c``; ``total``: the rows it would read (progress).
    """
    keep = ch.filter(names)
    if ch.whole or len(ch.key_columns) != 1 or not key_text:
        return kept(reader.stream(sql, batch=batch), keep, on_dropped=on_dropped)
    return _by_key(ch, reader, sql, keep, total=total, on_dropped=on_dropped)


def _by_key(ch: TableChanges, reader: Any, sql: str, keep: Callable[[list], list], *, total: int, on_dropped: Callable[[int], Any]) -> Iterator[list]:
    from pmigrate.metadata.dialects import placeholder

    keys = [k[0] for k in ch.kinds]
    mark = placeholder(reader.driver)
    glue = " AND " if " WHERE " in sql else " WHERE "
    column = f"c.{reader.q(ch.key_columns[0])}"
    written = 0
    for part in batched(keys, IN_KEYS):
        rows = keep(reader.all(f"{sql}{glue}{column} IN ({', '.join([mark] * len(part))})", part))
        written += len(rows)
        if rows:
            yield rows
    on_dropped(max(0, total - written))
