"""Row audit: verify's report of the comparison of every table (metadata/compare.py).

The comparison itself lives with the metadata stage, whose dry run counts
what a copy would insert, update and delete with it; this module turns its
results into verify's figures, lines and problems.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pmigrate.metadata.compare import MAX_LISTED, SESSIONS, Side, TablePlan, TableResult, audit_table, empty, plan_tables
from pmigrate.quote import shown
from pmigrate.words import plural

AREA = "verify-rows"

__all__ = ["AREA", "Side", "TablePlan", "TableResult", "audit", "audit_table", "plan_tables"]


def audit(
    src: Side,
    dst: Side,
    *,
    report: Any,
    batch_size: int = 5000,
    quiet: bool = True,
    stats: float = 0.0,
    with_sessions: bool = False,
    tmp_dir: str | None = None,
    fixes: Mapping[str, Callable[[Sequence[str]], Any]] | None = None,
) -> bool:
    """Audit every table, recording figures, summary lines and problems; True when all match.

    cli_auth_sessions is copied only on request (--with-sessions): it is
    compared then, or when the target holds any, and skipped otherwise.
    ``fixes`` maps a table to what the copy changes in its rows: given the
    compared columns, a function from a source row to the row the target
    must hold (e.g. files getting SSE-C keys made by pmigrate).
    """
    from pmigrate.progress import bar

    plans, schema_problems = plan_tables(src, dst)
    for plan in plans:
        if fixes and plan.name in fixes:
            plan.src_fix = fixes[plan.name](plan.columns)
    section = report.section(AREA)
    tables: dict[str, Any] = section.setdefault("tables", {})
    clean = True
    for kind, item, message in schema_problems:
        clean = False
        report.problem(area=AREA, kind=kind, item=item, message=message)
        report.line(AREA, f"{item}: {message}")
    with bar(quiet=quiet, every=stats, desc="verify rows", label=AREA, total=len(plans), unit="table") as progress:
        for plan in plans:
            if plan.name == SESSIONS and not with_sessions and empty(dst, SESSIONS):
                tables[plan.name] = {"skipped": "short-lived login handshakes, copied only with --with-sessions"}
                report.line(AREA, f"{plan.name}: skipped (none in the target; copied only with --with-sessions)")
                progress.update(1)
                continue
            if plan.only_src or plan.only_dst:
                clean = False
                msg = f"columns only in the source: {plan.only_src or '-'}; only in the target: {plan.only_dst or '-'}"
                report.problem(area=AREA, kind="columns", item=plan.name, message=msg)
            res = audit_table(plan, src, dst, batch_size=batch_size, tmp_dir=tmp_dir)
            _explain_collided(plan, dst, res)
            tables[plan.name] = res.figures()
            for kind, item, message in res.problems:
                report.problem(area=AREA, kind=kind, item=item, message=message)
            unlisted = sum(getattr(res, k) - res.listed.get(k, 0) for k in ("missing", "extra", "changed"))
            if unlisted:
                report.warn(f"{plan.name}: {plural(unlisted, 'more differing row')} than listed (limit {MAX_LISTED} per kind)")
            if not res.clean:
                clean = False
                report.fail()
            report.line(AREA, _summary_line(res))
            progress.update(1)
    section["ok"] = clean
    return clean


def _explain_collided(plan: TablePlan, dst: Side, res: TableResult) -> None:
    """A mysql target's collation may take a missing row's key for another one: name that one."""
    if dst.driver != "mysql" or not res.missing_keys or any(plan.kinds[i] != "text" for i in plan.key):
        return
    from pmigrate.verify import collided

    found, collation = collided.spellings(dst, plan.name, [plan.columns[i] for i in plan.key], res.missing_keys)
    if not found:
        return
    shown = {f"{plan.name}:{'/'.join(map(str, k))}": "/".join(map(str, v)) for k, v in found.items()}
    for n, (kind, item, message) in enumerate(res.problems):
        if kind == "missing" and item in shown:
            res.problems[n] = (kind, item, f"{message}: the target's {shown[item]} is the same key in its collation {collation} "
                               "(it tells no case, accents or trailing spaces apart), so this row cannot be stored beside it")
    res.collided = len(found)


def _summary_line(res: TableResult) -> str:
    head = f"{res.name}: {plural(res.source_rows, 'source row')}, {plural(res.target_rows, 'target row')}, {res.ok} ok"
    parts = []
    for kind in ("missing", "extra", "changed"):
        n = getattr(res, kind)
        if n:
            first = ", ".join(map(shown, res.first.get(kind, [])))
            parts.append(f"{n} {kind} (first: {first})")
    if res.collided:
        parts.append(f"{res.collided} missing under a key the target's collation takes for another row's")
    return head + (", " + ", ".join(parts) if parts else "")
