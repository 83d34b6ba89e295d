"""Shared by the bench scripts: each result row goes to the printed table and to bench/results/<name>.csv.

A CSV is merged, not overwritten: a row replaces an earlier one with the same
values in ``keys`` (e.g. the same case, tool and workers), so running a script
once per worker count builds one file for bench/plots.py. Every row carries
the time of its run and the machine's CPU count and load, which say which run
a figure comes from.
"""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
RUN = time.strftime("%Y-%m-%dT%H:%M:%S")


def write_csv(name: str, rows: Iterable[Mapping[str, Any]], *, keys: Sequence[str]) -> Path:
    """Merge ``rows`` into bench/results/<name>.csv (or $PMIGRATE_BENCH_RESULTS/<name>.csv)."""
    folder = Path(os.environ.get("PMIGRATE_BENCH_RESULTS") or RESULTS)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.csv"
    stamp = {"run": RUN, "cpus": os.cpu_count() or 0, "load": round(os.getloadavg()[0], 1)}
    new = [{**stamp, **{k: _cell(v) for k, v in r.items()}} for r in rows]
    old: list[dict[str, str]] = []
    if path.exists():
        with path.open(newline="", encoding="utf-8") as fh:
            old = list(csv.DictReader(fh))
    ident = lambda r: tuple(str(r.get(k, "")) for k in keys)  # noqa: E731
    replaced = {ident(r) for r in new}
    merged = [r for r in old if ident(r) not in replaced] + new
    fields: list[str] = []
    for r in merged:
        fields += [k for k in r if k not in fields]
    tmp = path.with_name(path.name + ".partial")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(merged)
    tmp.replace(path)
    print(f"(results in {path})")
    return path


def _cell(v: Any) -> Any:
    if isinstance(v, float):
        return "" if v != v else round(v, 3)  # NaN: empty cell
    return v


def print_table(header: Sequence[str], rows: Iterable[Sequence[Any]], *, widths: Sequence[int] | None = None) -> None:
    """A plain aligned table: first column left, the others right."""
    rows = [[_fmt(c) for c in r] for r in rows]
    widths = widths or [max(len(str(h)), *(len(r[i]) for r in rows)) if rows else len(str(h)) for i, h in enumerate(header)]
    line = lambda cells: " ".join(  # noqa: E731
        f"{c:<{w}}" if i == 0 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(cells, widths))
    )
    print(line([str(h) for h in header]))
    for r in rows:
        print(line(r))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "-" if v != v else f"{v:,.1f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)
