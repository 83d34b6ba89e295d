"""Passes that repeat while plikd serves, until one is small enough to be the last before the cutover.

Each pass is a whole run (metadata, then blobs) from a fresh snapshot of the
source, under the one lock the command holds. A pass copies what changed since
the one before (transfer/delta.py), so passes shrink while plikd writes less
than pmigrate copies; the first that copies fewer than N blobs ends the
repetition and says what to do next: stop plikd, run the final pass. The
downtime is then about as long as that last pass took.

A pass that fails ends the repetition with its exit code; Ctrl-C or a stop
signal ends it too, with the passes done so far in the summary and report.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from pmigrate import interrupt
from pmigrate.report import Report
from pmigrate.words import plural
from pmigrate.words import size as _size

AREA = "passes"


def refused(args: Any) -> str:
    """Why --repeat-until-delta cannot go with the other options given, or ''."""
    if args.metadata_only:
        return "--repeat-until-delta counts blobs copied by a pass: not with --metadata-only"
    if args.dry_run:
        return "--repeat-until-delta runs passes that copy: not with --dry-run (a dry run says what one pass would copy)"
    if args.verify:
        return "--repeat-until-delta with --verify would audit after every pass: run 'pmigrate verify' after the final pass"
    if args.prune:
        return "--prune deletes what plikd removed: give it to the final pass, once plikd is stopped, not to repeated passes"
    return ""


def final_command(config_path: str | None, target_path: str) -> str:
    """The command of the final pass, as the operator would type it."""
    conf = f"--config {config_path} " if config_path else ""
    return f"pmigrate {conf}--to {target_path} --prune"


def _pass_figures(number: int, report: Report, seconds: float) -> dict[str, Any]:
    data = report.sections.get("data", {})
    written = None
    meta = report.sections.get("metadata", {})
    tables = meta.get("tables")
    if isinstance(tables, dict):
        fresh = meta.get("target_state") == "empty"  # every row loaded
        entries = [t for t in tables.values() if isinstance(t, dict)]
        written = sum(t.get("target") or 0 if fresh else t.get("changed") or 0 for t in entries)
    return {
        "pass": number,
        "copied": int(data.get("copied", 0)),
        "bytes": int(data.get("bytes", 0)),
        "trusted": int(data.get("trusted", 0)),
        "rows_written": written,
        "seconds": round(seconds, 3),
        "ok": report.exit_code == 0,
    }


def _describe(p: dict[str, Any]) -> str:
    text = f"pass {p['pass']} copied {plural(p['copied'], 'blob')}, {_size(p['bytes'])} in {p['seconds']:.1f}s"
    if p["rows_written"] is not None:
        text += f"; {plural(p['rows_written'], 'row')} written"
    return text


def repeat(
    one_pass: Callable[[Report], None],
    *,
    first: Report,
    threshold: int,
    final: str,
    quiet: bool,
    finish: Callable[[Report], None],
) -> int:
    """Run ``one_pass`` into a fresh report each time until a pass copies fewer than ``threshold`` blobs.

    ``first``: the report the run opened (its config and lock figures are kept
    in the last one); ``finish``: prints the summary and writes the JSON of the
    last pass's report, with the passes listed.
    """
    passes: list[dict[str, Any]] = []
    report = first
    try:
        while True:
            if passes:
                report = Report(first.command)
                report.started = first.started
            started = time.perf_counter()
            try:
                one_pass(report)
            finally:
                passes.append(_pass_figures(len(passes) + 1, report, time.perf_counter() - started))
            p = passes[-1]
            if report.exit_code != 0:
                break
            if p["copied"] < threshold:
                report.line(AREA, f"pass {p['pass']} copied {plural(p['copied'], 'blob')} (< {threshold}): "
                                  f"stop plikd and run the final pass: {final}")  # fmt: skip
                break
            if not quiet:
                sys.stderr.write(f"pmigrate: {_describe(p)} (>= {threshold}): next pass\n")
    except KeyboardInterrupt as exc:  # Ctrl-C or a stop signal, in a pass or between two
        report.interrupted = True
        report.interrupted_code = interrupt.exit_code(exc)
        raise
    finally:
        _record(report, first, passes)
        finish(report)
    return report.exit_code


def _record(report: Report, first: Report, passes: list[dict[str, Any]]) -> None:
    """The passes, in the summary and the JSON report; what only the first report holds is carried over."""
    for area, figures in first.sections.items():
        report.sections.setdefault(area, figures)
    for text in first.warnings:
        if text not in report.warnings:
            report.warnings.append(text)
    report.section(AREA).update(passes=passes, count=len(passes))
    ended = [(a, t) for a, t in report.lines if a == AREA]
    report.lines[:] = [(a, t) for a, t in report.lines if a != AREA]
    for p in passes:
        report.line(AREA, _describe(p))
    report.lines.extend(ended)
