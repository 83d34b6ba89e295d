"""Command line: the parser (also the source of the man page), main() and exit codes.

Library errors become one-line CLI errors only here, at the edge.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path
from typing import Sequence

from pmigrate import __version__
from pmigrate.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, ConfigError, PmigrateError
from pmigrate.options import RunOptions, default_workers
from pmigrate.quote import line, lines
from pmigrate.redact import redact

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


def _add_common(p: argparse.ArgumentParser, *, verb: str, to_required: bool = True) -> None:
    p.add_argument(
        "--config",
        metavar="SRC.cfg",
        default=None,
        help="source plikd.cfg (default: $PLIKD_CONFIG, else ./plikd.cfg, else /etc/plikd.cfg); "
        "PLIKD_* environment overrides apply to this file only",
    )
    p.add_argument(
        "--to",
        metavar="TARGET.cfg",
        required=to_required,
        help="target plikd.cfg: only DataBackend, DataBackendConfig and MetadataBackendConfig are read (default: none, required)",
    )
    only = p.add_mutually_exclusive_group()
    only.add_argument("--metadata-only", action="store_true", help=f"{verb} the metadata database only (default: both)")
    only.add_argument("--data-only", action="store_true", help=f"{verb} the file blobs only (default: both)")
    p.add_argument(
        "--workers",
        type=_positive_int,
        metavar="N",
        default=default_workers(),
        help="worker processes for blobs (default: the number of CPUs)",
    )
    p.add_argument(
        "--batch-size",
        type=_positive_int,
        metavar="N",
        default=5000,
        help="metadata rows read and written per batch (default: %(default)s)",
    )
    p.add_argument(
        "--journal",
        metavar="PATH",
        type=Path,
        default=None,
        help="SQLite journal of finished blobs (default: .pmigrate-journal-<hash of target>.db beside TARGET.cfg)",
    )
    p.add_argument(
        "--checksum",
        choices=("xxh3", "md5"),
        default="xxh3",
        help="xxh3: compare xxh3-128 hashes of source and target; md5: also check each blob "
        "against files.md5 recorded by plikd (default: %(default)s)",
    )
    p.add_argument("--ignore-errors", action="store_true", help="go on past bad rows and blobs, list each in the report (default: stop at the first)")
    p.add_argument(
        "--follow-outside-symlinks",
        action="store_true",
        help="file source: read blobs through symlinks that lead out of its Directory, for a deployment "
        "that links there on purpose (default: such a blob is an error)",
    )
    p.add_argument("--json", metavar="REPORT.json", type=Path, default=None, help="write the full report as JSON (default: none)")
    level = p.add_mutually_exclusive_group()
    level.add_argument("-v", "--verbose", action="store_true", help="log details of each step (default: off)")
    level.add_argument("-q", "--quiet", action="store_true", help="no progress bars, summary only (default: off)")


def build_parser() -> argparse.ArgumentParser:
    """The whole CLI; argparse-manpage reads this too."""
    parser = _Parser(
        prog="pmigrate",
        description="Migrate a live Plik deployment (plikd) between metadata backends "
        "(sqlite3, postgres, mysql) and data backends (file, s3, gcs, swift), "
        "resumable and verified. Without a subcommand, migrates.",
        epilog=MIGRATE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"pmigrate {__version__}", help="print the version and exit")
    # Not required at this level so that 'pmigrate fakedb' parses; main() checks it.
    _add_common(parser, verb="migrate", to_required=False)
    parser.add_argument("--dry-run", action="store_true", help="print what would be copied, with counts and bytes; write nothing (default: off)")
    parser.add_argument("--verify", action="store_true", help="after copying, audit every blob and row as 'pmigrate verify' does (default: off)")
    parser.add_argument("--restart", action="store_true", help="ignore the journal and copy every blob again (default: resume)")
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
        default=None,
        help="memory the whole run may use (PSS of all its processes, e.g. 2G); fewer S3 upload parts are held "
        "at once to stay within it; 0 for no limit (default: workers x 2 x PartSize + 100 MB)",
    )
    parser.add_argument(
        "--lock-timeout",
        type=_positive_int,
        metavar="SECONDS",
        default=60,
        help="how long a metadata statement waits for a lock another session holds (a table locked on the source "
        "or the target) before the run gives up, rolled back; a wait is named on stderr after a few seconds "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--with-sessions",
        action="store_true",
        help="also copy cli_auth_sessions, short-lived login handshakes (default: skipped)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    verify = sub.add_parser(
        "verify",
        help="audit an already migrated target against the source",
        description="Audit a migrated target: every blob read and hashed, every row digested, against the source.",
        epilog=VERIFY_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common(verify, verb="verify")
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


def options_from(args: argparse.Namespace) -> RunOptions:
    return RunOptions(
        metadata=not args.data_only,
        data=not args.metadata_only,
        workers=args.workers,
        batch_size=args.batch_size,
        max_memory=getattr(args, "max_memory", None),
        dry_run=getattr(args, "dry_run", False),
        ignore_errors=args.ignore_errors,
        verify=getattr(args, "verify", False) or args.command == "verify",
        checksum=args.checksum,
        journal=args.journal,
        restart=getattr(args, "restart", False),
        merge=getattr(args, "merge", False),
        prune=getattr(args, "prune", False),
        with_sessions=getattr(args, "with_sessions", False),
        lock_timeout=getattr(args, "lock_timeout", 60),
        follow_outside_symlinks=args.follow_outside_symlinks,
        quiet=args.quiet,
        verbose=args.verbose,
    )


class _RedactingFormatter(logging.Formatter):
    """Redacts the whole formatted record, tracebacks included, and keeps each of its lines printable."""

    def format(self, record: logging.LogRecord) -> str:
        return lines(redact(super().format(record)))


def _setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    fmt = "%(levelname)s %(name)s: %(message)s" if verbose else "pmigrate: %(levelname)s: %(message)s"
    handler.setFormatter(_RedactingFormatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)
    logging.captureWarnings(True)  # library warnings go through the same redaction
    # psycopg warns of a COPY it could not end on a lost connection: the run's own error names the loss.
    for noisy in ("botocore", "boto3", "s3transfer", "urllib3", "google", "swiftclient", "psycopg"):
        logging.getLogger(noisy).setLevel(logging.INFO if verbose else logging.ERROR)


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


def _one_line(text: str) -> str:
    return line(redact(" ".join(str(text).split())))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None and not args.to:
        parser.error("the following arguments are required: --to")
    verbose = getattr(args, "verbose", False)
    _setup_logging(verbose)
    try:
        if args.command == "fakedb":
            from pmigrate import fakedb

            return fakedb.run(args)
        _check_paths(args)
        from pmigrate import migrate

        return migrate.run(args.command or "migrate", options_from(args), config_path=args.config, target_path=args.to, json_path=args.json)
    except PmigrateError as exc:
        if verbose:
            log.debug("details", exc_info=True)
        sys.stderr.write(_one_line(f"pmigrate: error: {exc}") + "\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("pmigrate: interrupted; run the same command again to resume\n")
        return EXIT_INTERRUPTED
    except OSError as exc:
        if verbose:
            log.debug("details", exc_info=True)
        sys.stderr.write(_one_line(f"pmigrate: error: {exc}") + "\n")
        return EXIT_FAILED
    except Exception as exc:  # noqa: BLE001 - the edge: no raw traceback, no secret, ever
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
