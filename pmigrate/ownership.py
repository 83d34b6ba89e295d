"""Which targets pmigrate filled, and from which source: the proof needed before updating or deleting there.

A target that already holds a Plik deployment pmigrate did not copy from
this very source belongs to someone else: a swapped ``--config``/``--to``
pointing at the live deployment, or another deployment's database. pmigrate
refuses it before writing anything, unless ``--merge`` asks to insert and
update there without ever deleting.

The record lives in the target itself, so a re-run from any host or with
any journal finds it, and it is as durable as what it vouches for:
- metadata: a table of pmigrate's own, ``pmigrate_owner``, beside plikd's
  tables (whose schema stays as plikd defines it). It is written in the
  transaction that loads the rows; on a fresh mysql target, whose DDL commits
  by itself, into a staging table that appears under its name in the same
  RENAME TABLE as Plik's tables (pmigrate.metadata.staging), so a killed run
  leaves staging tables only, never Plik's tables without the record.
- data: an object ``.pmigrate-owner.json`` at the root of the target store
  (its Directory, Prefix, Folder or Container). plikd names blobs by
  16-character ids, so the name never meets one; it is written before the
  first blob.

A source is named by where it lives (the database it opens, the data
location), never by anything secret.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pmigrate import __version__
from pmigrate.errors import ConfigError

OWNER_TABLE = "pmigrate_owner"
MARKER = ".pmigrate-owner.json"

EMPTY = "empty"  # nothing of a Plik deployment there: pmigrate may fill it and claims it
OWNED = "owned"  # filled by pmigrate from this source: merged, and pruned on request
FOREIGN = "foreign"  # holds a deployment pmigrate did not fill: refused, or merged with --merge
OTHER = "other-source"  # filled by pmigrate from another source: refused, or merged with --merge

BOOTSTRAP = ("migrations", "settings")  # what plikd writes when it first starts on an empty database
MERGE_HINT = "pass --merge to insert and update into it without deleting anything"


@dataclass(frozen=True)
class Ownership:
    state: str
    holder: str = ""  # the other source named by the record (OTHER)
    holds: str = ""  # what the target holds, for messages (FOREIGN)

    @property
    def owned(self) -> bool:
        return self.state == OWNED


def metadata_source(meta: Any) -> str:
    """The source database, as the record names it: driver, host, port and name, or the sqlite file."""
    from pmigrate import dsn

    return json.dumps(list(dsn.identity(meta.translation())))


def data_source(data: Any) -> str:
    """The source data location, as the record names it (no credentials)."""
    return json.dumps(list(data.location() or (data.backend,)))


def _show(identity: str) -> str:
    try:
        parts = json.loads(identity)
    except ValueError:
        return identity
    return " ".join(str(p) for p in parts if p not in ("", None))


def refuse(*, what: str, where: str, source: str, found: Ownership) -> ConfigError:
    """The one-line refusal of a target this source did not fill."""
    if found.state == OTHER:
        held = f"was filled by pmigrate from another source ({_show(found.holder)}), not from {_show(source)}"
    else:
        held = f"already holds {found.holds} that pmigrate did not copy from {_show(source)}"
    return ConfigError(
        f"the target {what} {where} {held}; nothing written. "
        f"Point TARGET.cfg at an empty {what}, check that --config and --to are not swapped, or {MERGE_HINT}"
    )


# -- metadata -----------------------------------------------------------------


def _q(conn: Any, name: str) -> str:
    return conn.dialect.identifier_preparer.quote_identifier(name)


def metadata_owner(conn: Any) -> str | None:
    """The source named by the target's record, or None when it has none."""
    import sqlalchemy as sa

    if OWNER_TABLE not in sa.inspect(conn).get_table_names():
        return None
    row = conn.exec_driver_sql(f"SELECT {_q(conn, 'source')} FROM {_q(conn, OWNER_TABLE)} WHERE {_q(conn, 'part')} = 'metadata'").first()
    return row[0] if row else None


def metadata_state(conn: Any, *, source: str, tables: Sequence[str]) -> Ownership:
    """Whose the target database is. ``tables``: Plik's tables present there.

    A target holding Plik's schema and no row but what plikd writes as it
    first starts (its migrations list and settings such as its signature
    key) is as good as empty.
    """
    owner = metadata_owner(conn)
    if owner == source:
        return Ownership(OWNED)
    if owner is not None:
        return Ownership(OTHER, holder=owner)
    held = []
    for t in tables:
        if t in BOOTSTRAP:
            continue
        if conn.exec_driver_sql(f"SELECT 1 FROM {_q(conn, t)} LIMIT 1").first() is not None:
            held.append(t)
    if not held:
        return Ownership(EMPTY)
    return Ownership(FOREIGN, holds=f"a Plik deployment (rows in {', '.join(held)})")


def _ddl(driver: str, table: str) -> str:
    text = "VARCHAR(1024)" if driver == "mysql" else "TEXT"
    key = "VARCHAR(32)" if driver == "mysql" else "TEXT"
    return (
        f"CREATE TABLE IF NOT EXISTS {table} (part {key} NOT NULL PRIMARY KEY, source {text} NOT NULL, "
        f"written_by {text} NOT NULL, first_at {text} NOT NULL, last_at {text} NOT NULL)"
    )


def create_owner_table(cursor: Any, *, driver: str, table: str = OWNER_TABLE) -> None:
    """The record's table, if missing. On mysql, DDL commits the open transaction: call it before any row.

    ``table``: another name for it, the staging name a fresh mysql target's tables are loaded under.
    """
    cursor.execute(_ddl(driver, table))


def write_metadata_owner(cursor: Any, *, driver: str, source: str, table: str = OWNER_TABLE) -> None:
    """Record (or refresh) this source as the target's, through the loading transaction's DB-API cursor."""
    now = _now()
    mark = "?" if driver == "sqlite3" else "%s"
    cursor.execute(f"SELECT first_at FROM {table} WHERE part = 'metadata'")
    row = cursor.fetchone()
    first = row[0] if row else now
    cursor.execute(f"DELETE FROM {table} WHERE part = 'metadata'")
    cursor.execute(
        f"INSERT INTO {table} (part, source, written_by, first_at, last_at) VALUES ({', '.join([mark] * 5)})",
        ("metadata", source, f"pmigrate {__version__}", first, now),
    )


# -- data ---------------------------------------------------------------------


def marker(source: str) -> bytes:
    """The record's bytes. ``claim`` tells this record from one written again in a store made anew (transfer/delta.py)."""
    body = {"source": source, "written_by": f"pmigrate {__version__}", "first_at": _now(), "claim": secrets.token_hex(8)}
    return json.dumps(body, indent=1).encode()


def data_state(backend: Any, *, source: str) -> Ownership:
    """Whose the target store is, from its marker and whether it holds any blob."""
    raw = backend.read_marker()
    if raw is not None:
        try:
            holder = json.loads(raw).get("source")
        except (ValueError, AttributeError):
            holder = None
        if holder == source:
            return Ownership(OWNED)
        return Ownership(OTHER, holder=str(holder or "unreadable record"))
    first = backend.first_blob()
    if first is None:
        return Ownership(EMPTY)
    return Ownership(FOREIGN, holds=f"objects (e.g. {first})")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
