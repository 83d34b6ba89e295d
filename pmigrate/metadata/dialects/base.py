"""What every driver's reader and writer share: quoting, raw connections, the Sink a table's rows go into."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Row = tuple[Any, ...]


def quote(driver: str, name: str) -> str:
    if driver == "mysql":
        return "`" + name.replace("`", "``") + "`"
    return '"' + name.replace('"', '""') + '"'


def placeholder(driver: str) -> str:
    return "?" if driver == "sqlite3" else "%s"


def raw_connection(engine: Any) -> tuple[Any, Any]:
    """(pool proxy, driver connection): the proxy goes back to the pool on close()."""
    proxy = engine.raw_connection()
    return proxy, proxy.driver_connection


class Sink:
    """Writes one table's batches; returns changed-row counts when the driver tells them."""

    def write(self, rows: Sequence[Row]) -> int | None:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> int | None:
        return None

    def abort(self, exc: BaseException) -> None:
        """A write or close failed with ``exc``: end what the sink holds open, without hiding ``exc``."""


def assignments(w: Any, columns: Sequence[str], pk: Sequence[str], fmt: str) -> list[str]:
    return [f"{w.q(c)} = {fmt.format(w.q(c))}" for c in columns if c not in pk]

