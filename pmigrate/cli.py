"""Command line: the parser (also the source of the man page), main() and exit codes.

Library errors become one-line CLI errors only here, at the edge.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pmigrate import __version__, console, interrupt
from pmigrate.data.retry import RETRY_FOR
from pmigrate.errors import EXIT_FAILED, EXIT_USAGE, ConfigError, PmigrateError
from pmigrate.options import RunOptions, default_workers
from pmigrate.quote import line
from pmigrate.redact import LogFormatter, quiet_libraries, redact
from pmigrate.words import plural, size

log = logging.getLogger("pmigrate")

MIGRATE_EXAMPLES = """\
examples:
  pmigrate --config /etc/plikd.cfg --to target.cfg --dry-run
  pmigrate --config /etc/plikd.cfg --to target.cfg --workers 32 --verify --json report.json
  pmigrate --to target.cfg --data-only --ignore-errors
"""

VERIFY_EXAMPLES = """\
examples:
  pmigrate verify --config /etc/plikd.cfg --to target.cfg
  pmigrate verify --to target.cfg --data-only --checksum md5 --json audit.json
"""

FAKEDB_EXAMPLES = """\
examples:
  pmigrate fakedb demo/src --files 2000
  pmigrate fakedb bench/src --files 1000000 --metadata-only --seed 7
"""


class _Parser(argparse.ArgumentParser):
    """One line on a usage error, exit 2, as for every other expected failure."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        sys.exit(EXIT_USAGE)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


_UNITS = {"": 1, "K": 1 << 10, "KIB": 1 << 10, "KB": 10**3, "M": 1 << 20, "MIB": 1 << 20, "MB": 10**6,
          "G": 1 << 30, "GIB": 1 << 30, "GB": 10**9, "T": 1 << 40, "TIB": 1 << 40, "TB": 10**12}  # fmt: skip


def _memory_size(text: str) -> int:
    """Bytes, with coreutils' suffixes: 512M and 2GiB are binary, 500MB decimal; 0 means no limit."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    unit = m.group(2).upper() if m else ""
    if m is None or unit not in _UNITS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size: write bytes, or a number with K, M, G or T (0: no limit)")
    return int(float(m.group(1)) * _UNITS[unit])


_SECONDS = {"": 1, "S": 1, "M": 60, "H": 3600}


def _bwlimit(text: str) -> Any:
    from pmigrate.data import bwlimit

    try:
        return bwlimit.parse_timetable(text)
    except bwlimit.LimitSyntaxError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _tpslimit(text: str) -> float:
    from pmigrate.data import bwlimit

    try:
        return bwlimit.parse_tps(text)
    except bwlimit.LimitSyntaxError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _duration(text: str) -> float:
    """Seconds, from 90, 90s, 1.5m or 1h, as rclone's --stats takes them."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]?)\s*", text)
    unit = m.group(2).upper() if m else ""
    if m is None or unit not in _SECONDS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration: write seconds, or a number with s, m or h")
    return float(m.group(1)) * _SECONDS[unit]


# What an option not given means, wherever it may be written (before or after 'verify').
BATCH_SIZE = 5000
STATS = 10.0  # seconds between progress lines off a terminal
MIGRATE_ONLY = ("dry_run", "verify", "restart", "recheck", "repeat_until_delta", "max_memory", "merge", "prune", "no_space_check",
                "lock_timeout", "bwlimit", "tpslimit")  # fmt: skip


def _defaults() -> dict[str, Any]:
    return {
        "config": None, "to": None, "metadata_only": False, "data_only": False, "workers": default_workers(),
        "batch_size": BATCH_SIZE, "journal": None, "checksum": "xxh3", "ignore_errors": False, "json": None,
        "verbose": False, "quiet": False, "stats": STATS, "with_sessions": False, "follow_outside_symlinks": False,
        "retry_for": RETRY_FOR,
        "dry_run": False, "verify": False, "restart": False, "recheck": False, "repeat_until_delta": None, "max_memory": None,
        "merge": False, "prune": False, "no_space_check": False, "lock_timeout": 60,
        "cluster": None, "bwlimit": None, "tpslimit": 0.0,
    }  # fmt: skip


def _add_common(p: argparse.ArgumentParser, *, verify: bool) -> None:
    """The options of both migrating and 'verify', worded for each; the parser's defaults are SUPPRESS (see _parse)."""
    journal = ".pmigrate-journal-<hash of target>.db beside TARGET.cfg"
    p.add_argument(
        "--config",
        metavar="SRC.cfg",
        help="source plikd.cfg (default: $PLIKD_CONFIG, else ./plikd.cfg, else /etc/plikd.cfg); "
        "PLIKD_* environment overrides apply to this file only",
    )
    p.add_argument(
        "--to",
        metavar="TARGET.cfg",
        help=("plikd.cfg of the migrated target" if verify else "target plikd.cfg")
        + ": only DataBackend, DataBackendConfig and MetadataBackendConfig are read (required)",
    )
    only = p.add_mutually_exclusive_group()
    if verify:
        only.add_argument("--metadata-only", action="store_true", help="compare the metadata rows only (default: rows and blobs)")
        only.add_argument("--data-only", action="store_true", help="check the file blobs only (default: rows and blobs)")
    else:
        only.add_argument("--metadata-only", action="store_true", help="migrate the metadata database only (default: both)")
        only.add_argument("--data-only", action="store_true", help="migrate the file blobs only (default: both)")
    p.add_argument(
        "--workers",
        type=_positive_int,
        metavar="N",
        help=f"worker processes that {'read and hash' if verify else 'copy'} blobs (default: the number of CPUs)",
    )
    p.add_argument(
        "--cluster",
        metavar="ADDRESS",
        help=f"{'read and hash' if verify else 'copy'} blobs on the workers of a Dask cluster: its scheduler's address "
        "(tcp://HOST:8786; PMIGRATE_CLUSTER_KEY set here and for every worker), or local:N for N worker processes "
        "on this host; needs pmigrate[dask] (default: --workers processes on this host)",
    )
    p.add_argument(
        "--batch-size",
        type=_positive_int,
        metavar="N",
        help=("rows read per batch from each database" if verify else "metadata rows read and written per batch")
        + f" (default: {BATCH_SIZE})",
    )
    p.add_argument(
        "--journal",
        metavar="PATH",
        type=Path,
        help="the copy journal: blobs are compared with the hashes it recorded, and one found missing or damaged "
        f"is dropped from it so that the next pmigrate run copies it again (default: {journal})"
        if verify
        else f"SQLite journal of finished blobs (default: {journal})",
    )
    p.add_argument(
        "--checksum",
        choices=("xxh3", "md5"),
        help="xxh3: compare each target blob's xxh3-128 hash with the journal's or the source's; md5: also check "
        "it against files.md5 recorded by plikd (default: xxh3)"
        if verify
        else "xxh3: compare xxh3-128 hashes of source and target; md5: also check each blob "
        "against files.md5 recorded by plikd (default: xxh3)",
    )
    p.add_argument(
        "--ignore-errors",
        action="store_true",
        help="no effect: verify always goes on past every difference and lists each"
        if verify
        else "go on past bad rows and blobs, list each in the report (default: stop at the first)",
    )
    p.add_argument("--json", metavar="REPORT.json", type=Path, help="write the full report as JSON (default: none)")
    p.add_argument(
        "--with-sessions",
        action="store_true",
        help="also compare cli_auth_sessions when the target holds none (default: only when it holds some)"
        if verify
        else "also copy cli_auth_sessions, short-lived login handshakes (default: skipped)",
    )
    p.add_argument(
        "--follow-outside-symlinks",
        action="store_true",
        help="file source: read blobs through symlinks that lead out of its Directory, for a deployment "
        "that links there on purpose (default: such a blob is an error)",
    )
    p.add_argument(
        "--stats",
        type=_duration,
        metavar="DURATION",
        help="when stderr is not a terminal (a log file, cron, systemd), one progress line every DURATION, "
        f"e.g. 30s or 5m, instead of bars; 0 for none (default: {STATS:.0f}s)",
    )
    p.add_argument(
        "--retry-for",
        type=_duration,
        metavar="DURATION",
        help="S3: how long a request is tried again while the store answers nothing at all (an outage), e.g. 90s "
        f"or 5m; past that the run stops, and the same command resumes it (default: {RETRY_FOR:g}s)",
    )
    level = p.add_mutually_exclusive_group()
    level.add_argument("-v", "--verbose", action="store_true", help="log details of each step (default: off)")
    level.add_argument("-q", "--quiet", action="store_true", help="no progress bars or lines, summary only (default: off)")


class _Subcommands(argparse._SubParsersAction):
    """Notes the options written before the subcommand (every top-level default is SUPPRESS: only given ones are set)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:  # type: ignore[no-untyped-def]
        namespace.before_command = sorted(k for k in vars(namespace) if k != self.dest)
        super().__call__(parser, namespace, values, option_string)


def build_parser() -> argparse.ArgumentParser:
    """The whole CLI; argparse-manpage reads this too."""
    parser = _Parser(
        prog="pmigrate",
        description="Migrate a live Plik deployment (plikd) between metadata backends "
        "(sqlite3, postgres, mysql) and data backends (file, s3, gcs, swift), "
        "resumable and verified. Without a subcommand, migrates.",
        epilog=MIGRATE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    parser.register("action", "parsers", _Subcommands)
    parser.add_argument("--version", action="version", version=f"pmigrate {__version__}", help="print the version and exit")
    _add_common(parser, verify=False)
    parser.add_argument("--dry-run", action="store_true", help="print what would be copied, with counts and bytes; write nothing (default: off)")
    parser.add_argument("--verify", action="store_true", help="after copying, audit every blob and row as 'pmigrate verify' does (default: off)")
    parser.add_argument("--restart", action="store_true", help="ignore the journal and copy every blob again (default: resume)")
    parser.add_argument(
        "--recheck",
        action="store_true",
        help="look up on the target (a stat or a HEAD) every blob the journal lists as done, and copy again "
        "those not there (default: trust the journal for blobs whose source row has not changed)",
    )
    parser.add_argument(
        "--repeat-until-delta",
        type=_positive_int,
        metavar="N",
        help="while plikd serves: run passes back to back until one copies fewer than N blobs, then stop and "
        "say so; stop plikd and run the final pass then (default: one pass)",
    )
    parser.add_argument(
        "--prune",
        action="store_true",
        help="delete from the target the rows gone from the source (plikd purged them); only in a target "
        "pmigrate filled from this source (default: keep them)",
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="accept a non-empty target that pmigrate did not fill from this source: rows and blobs are "
        "inserted and updated there, nothing is deleted (default: refuse it)",
    )
    parser.add_argument(
        "--max-memory",
        type=_memory_size,
        metavar="SIZE",
        help="memory the whole run may use (PSS of all its processes, e.g. 2G); fewer S3 upload parts are held "
        "at once to stay within it; 0 for no limit (default: none for the processes, and 2 upload parts a worker "
        "on top of them, within half the memory available)",
    )
    parser.add_argument(
        "--no-space-check",
        action="store_true",
        help="copy blobs even when the target filesystem's free space is less than what is left to copy, "
        "e.g. onto a filesystem that compresses (default: refuse before writing anything)",
    )
    parser.add_argument(
        "--bwlimit",
        type=_bwlimit,
        metavar="RATE",
        help="bytes per second read from the source by all the workers together, in rclone's notation: 10M "
        "(MiB/s), 512k, off, or a timetable such as '08:00,10M 19:00,off' or 'Mon-08:00,2M Sat-00:00,off' "
        "(local time); with --cluster, divided among its workers (default: off)",
    )
    parser.add_argument(
        "--tpslimit",
        type=_tpslimit,
        metavar="N",
        help="requests per second to the S3, GCS or Swift stores, by all the workers together, e.g. 10 "
        "(default: 0, no limit)",
    )
    parser.add_argument(
        "--lock-timeout",
        type=_positive_int,
        metavar="SECONDS",
        help="how long a metadata statement waits for a lock another session holds (a table locked on the source "
        "or the target) before the run gives up, rolled back; a wait is named on stderr after a few seconds "
        "(default: 60)",
    )
    # A group of its own, after the options: the help and the man page list the options first.
    sub = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND", parser_class=_Parser)
    verify = sub.add_parser(
        "verify",
        help="audit an already migrated target against the source",
        description="Audit a migrated target: every blob read and hashed, every row digested, against the source.",
        epilog=VERIFY_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    _add_common(verify, verify=True)
    fakedb = sub.add_parser(
        "fakedb",
        help="generate a fake Plik deployment (metadata and blobs) for demos, tests and benchmarks",
        description="Generate a realistic fake Plik deployment at the latest schema, with a matching plikd.cfg.",
        epilog=FAKEDB_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from pmigrate import fakedb as fakedb_mod

    fakedb_mod.add_arguments(fakedb)
    return parser


def man_parser() -> argparse.ArgumentParser:
    """The parser as the man page shows it: docs/man-extra.txt gives its DESCRIPTION, so the one-line one goes."""
    parser = build_parser()
    parser.description = None
    return parser


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse, then merge: an option means the same before or after 'verify'; one that does not apply is refused.

    Every default of the top-level and 'verify' parsers is SUPPRESS, so that
    the subcommand's parser cannot overwrite what was written before it; the
    defaults are filled in here.
    """
    args = parser.parse_args(argv)
    before = getattr(args, "before_command", [])
    flags = {a.dest: max(a.option_strings, key=len) for a in parser._actions if a.option_strings}
    sub = next(a for a in parser._actions if isinstance(a, _Subcommands))
    here = sub.choices.get(args.command, parser)  # errors point at the help of the command run
    if args.command == "fakedb" and before:
        here.error(f"{flags[before[0]]} before 'fakedb' is not taken: write fakedb's options after it")
    if args.command == "verify":
        for dest in MIGRATE_ONLY:
            if hasattr(args, dest):
                here.error(f"{flags[dest]} is an option of migrating, not of verify")
    for dest, value in _defaults().items():
        if not hasattr(args, dest):
            setattr(args, dest, value)
    if args.command != "fakedb":
        if not args.to:
            here.error("the following arguments are required: --to")
        if args.metadata_only and args.data_only:
            here.error("argument --data-only: not allowed with argument --metadata-only")
        if args.verbose and args.quiet:
            here.error("argument -q/--quiet: not allowed with argument -v/--verbose")
        if args.repeat_until_delta is not None:
            from pmigrate import cutover

            problem = cutover.refused(args)
            if problem:
                here.error(problem)
        if args.cluster and args.max_memory is not None:
            here.error("--max-memory bounds this host's worker processes, not a Dask cluster's: give each dask worker "
                       "--memory-limit instead (see docs/guide/cluster.md)")  # fmt: skip
    return args


def options_from(args: argparse.Namespace) -> RunOptions:
    return RunOptions(
        metadata=not args.data_only,
        data=not args.metadata_only,
        workers=args.workers,
        batch_size=args.batch_size,
        max_memory=args.max_memory,
        dry_run=args.dry_run,
        ignore_errors=args.ignore_errors,
        verify=args.verify or args.command == "verify",
        checksum=args.checksum,
        journal=args.journal,
        restart=args.restart,
        recheck=args.recheck,
        repeat_until_delta=args.repeat_until_delta,
        merge=args.merge,
        prune=args.prune,
        with_sessions=args.with_sessions,
        lock_timeout=args.lock_timeout,
        follow_outside_symlinks=args.follow_outside_symlinks,
        space_check=not args.no_space_check,
        retry_for=args.retry_for,
        quiet=args.quiet,
        stats=args.stats,
        verbose=args.verbose,
        cluster=args.cluster,
        bwlimit=args.bwlimit,
        tpslimit=args.tpslimit,
    )


def _setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    fmt = "pmigrate: %(levelname)s: %(name)s: %(message)s" if verbose else "pmigrate: %(levelname)s: %(message)s"
    handler.setFormatter(LogFormatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)
    logging.captureWarnings(True)  # library warnings go through the same redaction
    quiet_libraries(verbose=verbose)
    # A statement cut short by Ctrl-C or a stop signal leaves a connection that SQLAlchemy discards,
    # and a driver cursor whose __del__ fails: cleanups given up on, tracebacks nobody can act on.
    logging.getLogger("sqlalchemy.pool").setLevel(logging.INFO if verbose else logging.CRITICAL)
    sys.unraisablehook = _log_unraisable


def _log_unraisable(info: sys.UnraisableHookArgs) -> None:
    """An exception Python can only ignore (raised in __del__, ...): in the log with -v."""
    log.debug("exception ignored in %r", info.object, exc_info=(info.exc_type, info.exc_value, info.exc_traceback))


def _check_paths(args: argparse.Namespace) -> None:
    """Output paths checked before anything runs: a bad one is a usage error, not a lost report."""
    for opt in ("json", "journal"):
        path = getattr(args, opt, None)
        if path is None:
            continue
        parent = Path(path).parent
        if not parent.is_dir():
            raise ConfigError(f"--{opt} {path}: folder {parent} does not exist: create it or choose another path")
        if Path(path).is_dir():
            raise ConfigError(f"--{opt} {path} is a directory: give a file name")


# What one worker process costs: its own memory (Python, the SDK's client; docs/tuning.md)
# and its start (measured: 500 workers on 2 CPUs took 25 s before the first blob).
WORKER_MIB = 20
WORKER_START_S = 0.05


def _warn_many_workers(workers: int, cpus: int) -> None:
    """Far more workers than the tuning guide ever advises: say what they cost before paying it."""
    if workers <= max(64, 16 * cpus):
        return
    memory = size(workers * WORKER_MIB << 20)
    log.warning(
        "--workers %d is far above the %s here: every worker is a process of its own, up to %d MiB and some "
        "%.2f s to start (here up to %s and %.0f s before the first blob); more than 64 workers, or 16 per CPU, "
        "seldom copy faster (see docs/tuning.md)",
        workers, plural(cpus, "CPU"), WORKER_MIB, WORKER_START_S, memory, workers * WORKER_START_S,
    )  # fmt: skip


def _one_line(text: str) -> str:
    return line(redact(" ".join(str(text).split())))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = _parse(parser, argv)
    if args.command == "fakedb":
        return _main(args)
    # A run ends on SIGTERM and SIGHUP as on Ctrl-C, and outlives its terminal.
    with console.guarded(), interrupt.handled():
        return _main(args)


def _main(args: argparse.Namespace) -> int:
    verbose = getattr(args, "verbose", False)
    _setup_logging(verbose)
    try:
        if args.command == "fakedb":
            from pmigrate import fakedb

            return fakedb.run(args)
        _check_paths(args)
        if args.cluster:
            from pmigrate.transfer import cluster

            cluster.check_option(args.cluster, env=os.environ)
        else:
            _warn_many_workers(args.workers, os.cpu_count() or 1)
        from pmigrate import migrate

        return migrate.run(args.command or "migrate", options_from(args), config_path=args.config, target_path=args.to, json_path=args.json)
    except PmigrateError as exc:
        if verbose:
            log.debug("details", exc_info=True)
        sys.stderr.write(_one_line(f"pmigrate: error: {exc}") + "\n")
        return exc.exit_code
    except KeyboardInterrupt as exc:  # Ctrl-C, or interrupt.Stopped: SIGTERM, SIGHUP
        sys.stderr.write(f"pmigrate: {interrupt.describe(exc)}; run the same command again to resume\n")
        return interrupt.exit_code(exc)
    except OSError as exc:
        if verbose:
            log.debug("details", exc_info=True)
        sys.stderr.write(_one_line(f"pmigrate: error: {exc}") + "\n")
        return EXIT_FAILED
    except Exception as exc:  # the edge: no raw traceback, no secret, ever
        if type(exc).__module__.startswith("sqlalchemy"):
            if verbose:
                log.debug("details", exc_info=True)
            orig = getattr(exc, "orig", None) or exc
            sys.stderr.write(_one_line(f"pmigrate: error: database error: {orig}") + "\n")
            return EXIT_FAILED
        if verbose:
            log.error("unexpected failure", exc_info=True)
        hint = "" if verbose else "; run again with -v for details"
        sys.stderr.write(_one_line(f"pmigrate: error: unexpected {type(exc).__name__}: {exc}{hint}") + "\n")
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
