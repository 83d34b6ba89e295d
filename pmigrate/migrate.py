"""The run: config -> the target's lock -> snapshot of a sqlite3 source -> preflight checks of every stage -> metadata -> blobs -> verify -> report.

Every stage checks its inputs before any stage writes, so that bad input ends
with exit 2 and nothing written on the target.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from pathlib import Path

from pmigrate import config, interrupt, lock
from pmigrate.errors import ConfigError
from pmigrate.metadata import snapshot
from pmigrate.options import RunOptions
from pmigrate.report import Report

log = logging.getLogger(__name__)


def run(command: str, opts: RunOptions, *, config_path: str | None, target_path: str, json_path: Path | None) -> int:
    src, dst = config.load_pair(config_path, target_path, env=os.environ)
    if opts.follow_outside_symlinks and src.data.backend == "file":
        from pmigrate.data.file import FOLLOW_OUTSIDE

        data = dataclasses.replace(src.data, options={**src.data.options, FOLLOW_OUTSIDE: True})
        src = dataclasses.replace(src, data=data)
    src, dst = _retry_for(src, opts), _retry_for(dst, opts)
    log.info("source %s", src.describe())
    log.info("target %s", dst.describe())
    log.info("options: %s", _described(command, opts))
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

    with lock.hold(dst, command=command, opts=opts, report=report):  # before any stage reads the target's state
        check_source(src, dst, command=command, opts=opts)
        if opts.repeat_until_delta is not None:  # passes back to back while plikd serves
            from pmigrate import cutover

            def one_pass(rep: Report) -> None:
                with snapshot.of_source(src, report=rep) as snap:
                    _execute(stages, _preflight(stages, snap, dst, opts=opts), opts=opts, report=rep)

            return cutover.repeat(one_pass, first=report, threshold=opts.repeat_until_delta, quiet=opts.quiet,
                                  final=cutover.final_command(config_path, target_path),
                                  finish=lambda rep: _finish(rep, json_path))  # fmt: skip
        with snapshot.of_source(src, report=report) as src:  # every stage reads a sqlite3 source from one copy of it
            return _run_stages(stages, src, dst, opts=opts, report=report, json_path=json_path)


def _retry_for(cfg: config.PlikConfig, opts: RunOptions) -> config.PlikConfig:
    """An S3 store's options with --retry-for, for every process that builds its backend."""
    if cfg.data.backend != "s3":
        return cfg
    from pmigrate.data.retry import RETRY_FOR_KEY

    data = dataclasses.replace(cfg.data, options={**cfg.data.options, RETRY_FOR_KEY: opts.retry_for})
    return dataclasses.replace(cfg, data=data)


def _run_stages(stages: list, src: config.PlikConfig, dst: config.PlikConfig, *, opts: RunOptions, report: Report, json_path: Path | None) -> int:
    plans = _preflight(stages, src, dst, opts=opts)
    try:
        _execute(stages, plans, opts=opts, report=report)
    finally:
        _finish(report, json_path)
    return report.exit_code


def _finish(report: Report, json_path: Path | None) -> None:
    report.print_summary(sys.stdout)
    if json_path is not None:
        report.write_json(json_path)


def _preflight(stages: list, src: config.PlikConfig, dst: config.PlikConfig, *, opts: RunOptions) -> list:
    plans = []
    for stage in stages:
        started = time.perf_counter()
        plans.append(stage.preflight(src, dst, opts=opts))
        log.info("%s: checks passed in %.1fs", _name(stage), time.perf_counter() - started)
    return plans


def _execute(stages: list, plans: list, *, opts: RunOptions, report: Report) -> None:
    """Run the stages in turn; the report marked failed or interrupted as they end."""
    try:
        for stage, plan in zip(stages, plans):
            started, seen = time.perf_counter(), len(report.lines)
            log.info("%s: started", _name(stage))
            stage.run(plan, opts=opts, report=report)
            log.info("%s: ended in %.1fs", _name(stage), time.perf_counter() - started)
            for area in dict.fromkeys(area for area, _ in report.lines[seen:]):
                log.info("%s: %s", area, _figures(report.section(area)))
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM, SIGHUP (pmigrate.interrupt)
        report.interrupted = True
        report.interrupted_code = interrupt.exit_code(exc)
        raise
    except Exception:
        report.fail()  # the error itself is printed by the CLI
        raise


def _name(stage: object) -> str:
    return getattr(stage, "AREA", None) or getattr(stage, "__name__", "stage").rsplit(".", 1)[-1]


def _figures(section: dict) -> str:
    """A stage's own figures (its section of the JSON report, lists and tables aside) in one line."""
    return ", ".join(f"{k}={v}" for k, v in section.items() if not isinstance(v, (dict, list))) or "-"


def _described(command: str, opts: RunOptions) -> str:
    """The options that shape the run, as -v logs them."""
    what = "metadata and data" if opts.metadata and opts.data else "metadata only" if opts.metadata else "data only"
    parts = [command + (" (dry run)" if opts.dry_run else ""), what, f"{opts.workers} workers", f"batch size {opts.batch_size}",
             f"checksum {opts.checksum}"]  # fmt: skip
    parts += ["--" + name.replace("_", "-") for name in ("restart", "merge", "prune", "ignore_errors", "with_sessions") if getattr(opts, name)]
    if opts.bwlimit is not None:
        parts.append(f"--bwlimit {opts.bwlimit.text}")
    if opts.tpslimit:
        parts.append(f"--tpslimit {opts.tpslimit:g}")
    if opts.verify and command == "migrate":
        parts.append("then verify")
    return ", ".join(parts)


def check_sides(src: config.PlikConfig, dst: config.PlikConfig, *, command: str, opts: RunOptions) -> None:
    """Before the lock and any stage: the target names what the run will write, and its database answers."""
    from pmigrate.metadata import db

    if opts.metadata and not dst.has_metadata:
        raise ConfigError(f"{dst.path} has no [MetadataBackendConfig]: add one, or pass --data-only")
    if opts.data and not dst.has_data:
        raise ConfigError(f"{dst.path} names no DataBackend: add DataBackend and [DataBackendConfig], or pass --metadata-only")
    if opts.metadata and command != "verify":
        db.check_connect(dst.metadata, must_exist=False)


def check_source(src: config.PlikConfig, dst: config.PlikConfig, *, command: str, opts: RunOptions) -> None:
    """Under the target's lock, so that a second run is refused at once rather than after waiting on a busy source."""
    from pmigrate.metadata import db

    # The source database is read by every stage (the blob list comes from its files table).
    db.check_connect(src.metadata, must_exist=True, read_only=True)
    if command == "verify":
        from pmigrate import verify

        verify.check_migrated(src, dst, opts=opts)
        if opts.metadata:
            db.check_connect(dst.metadata, must_exist=True)
