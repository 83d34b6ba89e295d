"""Rows missing from a mysql target whose key it holds under another spelling.

MySQL's and MariaDB's default collations take ``casecollideabcde`` and
``CaseCollideAbCdE`` for one key: the audit reads keys byte for byte and
finds the source's row missing; this says which target row took its place,
so the report names both keys instead of a bare "missing".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pmigrate.batching import batched

# Missing keys looked up per statement.
BATCH = 500


def spellings(dst: Any, table: str, columns: Sequence[str], keys: Sequence[tuple]) -> tuple[dict[tuple, tuple], str]:
    """({missing key: the target's key equal to it in the column's collation}, collation name).

    Only keys made of text columns (the others are compared exactly anyway).
    """
    if not keys:
        return {}, ""
    with dst.engine.connect() as conn:
        raw = conn.connection.driver_connection
        cur = raw.cursor()
        try:
            cur.execute(
                "SELECT COLUMN_NAME, CHARACTER_SET_NAME, COLLATION_NAME FROM information_schema.COLUMNS "
                "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s",
                (table,),
            )
            coll = {name: (cs, c) for name, cs, c in cur.fetchall()}
            if any(coll.get(c, (None, None))[1] is None for c in columns):
                return {}, ""
            q = lambda n: "`" + n.replace("`", "``") + "`"  # noqa: E731
            on = " AND ".join(
                f"t.{q(c)} = CONVERT(m.k{i} USING {coll[c][0]}) COLLATE {coll[c][1]}" for i, c in enumerate(columns)
            )
            same = " AND ".join(f"CAST(t.{q(c)} AS BINARY) = CAST(CONVERT(m.k{i} USING {coll[c][0]}) AS BINARY)" for i, c in enumerate(columns))
            picked = ", ".join(f"m.k{i}" for i in range(len(columns))) + ", " + ", ".join(f"t.{q(c)}" for c in columns)
            one = "SELECT " + ", ".join(f"%s AS k{i}" for i in range(len(columns)))
            found: dict[tuple, tuple] = {}
            for chunk in batched(keys, BATCH):
                union = " UNION ALL ".join([one] * len(chunk))
                cur.execute(
                    f"SELECT {picked} FROM ({union}) m JOIN {q(table)} t ON {on} WHERE NOT ({same})",
                    [v for key in chunk for v in key],
                )
                n = len(columns)
                for row in cur.fetchall():
                    found[tuple(row[:n])] = tuple(row[n:])
            return found, coll[columns[0]][1]
        finally:
            cur.close()
            raw.rollback()
