"""The run: config -> preflight checks of every stage -> metadata -> blobs -> verify -> report.

Every stage checks its inputs before any stage writes, so that bad input ends
with exit 2 and nothing written on the target.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pmigrate import config, interrupt
from pmigrate.errors import ConfigError
from pmigrate.options import RunOptions
from pmigrate.report import Report


def run(command: str, opts: RunOptions, *, config_path: str | None, target_path: str, json_path: Path | None) -> int:
    src, dst = config.load_pair(config_path, target_path, env=os.environ)
    check_sides(src, dst, command=command, opts=opts)
    report = Report(command)
    report.section("config").update(source=src.describe(), target=dst.describe())
    if src.warnings or dst.warnings:
        # Already shown on stderr as the configs were read; kept for --json.
        report.section("config")["warnings"] = [*src.warnings, *dst.warnings]

    # Imported here: a metadata-only run never imports the blob engine's SDKs.
    stages = []
    if command == "migrate":
        if opts.metadata:
            from pmigrate.metadata import copier

            stages.append(copier)
        if opts.data:
            from pmigrate.transfer import engine

            stages.append(engine)
    if command == "verify" or (opts.verify and not opts.dry_run):
        from pmigrate import verify

        stages.append(verify)

    plans = [stage.preflight(src, dst, opts=opts) for stage in stages]
    try:
        for stage, plan in zip(stages, plans):
            stage.run(plan, opts=opts, report=report)
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM, SIGHUP (pmigrate.interrupt)
        report.interrupted = True
        report.interrupted_code = interrupt.exit_code(exc)
        raise
    except Exception:
        report.fail()  # the error itself is printed by the CLI
        raise
    finally:
        report.print_summary(sys.stdout)
        if json_path is not None:
            report.write_json(json_path)
    return report.exit_code


def check_sides(src: config.PlikConfig, dst: config.PlikConfig, *, command: str, opts: RunOptions) -> None:
    """Before any stage: the target names what the run will write, and each database answers."""
    from pmigrate.metadata import db

    if opts.metadata and not dst.has_metadata:
        raise ConfigError(f"{dst.path} has no [MetadataBackendConfig]: add one, or pass --data-only")
    if opts.data and not dst.has_data:
        raise ConfigError(f"{dst.path} names no DataBackend: add DataBackend and [DataBackendConfig], or pass --metadata-only")
    # The source database is read by every stage (the blob list comes from its files table).
    db.check_connect(src.metadata, must_exist=True)
    if opts.metadata:
        db.check_connect(dst.metadata, must_exist=command == "verify")
