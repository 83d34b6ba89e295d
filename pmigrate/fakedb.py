"""Fake Plik deployments for the demo, the tests and the benchmarks.

'pmigrate fakedb DIR' fills a metadata database at Plik's latest schema and a
file-backend directory DIR/files, then writes DIR/plikd.cfg pointing at both,
so that 'pmigrate --config DIR/plikd.cfg --to ...' runs on it as it is.
The same seed gives the same rows and the same blob bytes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from pmigrate import redact as secrets
from pmigrate.errors import ConfigError
from pmigrate.fake import tables
from pmigrate.fake.rows import Generator, Shape, soft_deleted_count
from pmigrate.redact import redact
from pmigrate.words import plural, size

SIZES = ("small", "mixed", "large")
DB_NAME = "plik.db"
FILES_DIR = "files"
CONFIG_NAME = "plikd.cfg"


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be between 0 and 1")
    return value


def _fraction_or_count(text: str) -> float | int:
    """'0.3' is a fraction of the uploads, '25' a number of uploads."""
    if any(c in text for c in ".eE"):
        return _fraction(text)
    return _count(text)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", metavar="DIR", help="folder to create the deployment in (must be empty or absent)")
    p.add_argument("--users", type=_count, default=None, metavar="N",
                   help="users, the first being local:admin (default: uploads/10, at most 10000)")
    p.add_argument("--uploads", type=_count, default=None, metavar="N", help="uploads (default: files/3)")
    p.add_argument("--files", type=_count, default=1000, metavar="N",
                   help="file rows, in every status; only uploaded and removed ones have a blob (default: %(default)s)")
    p.add_argument("--anon-uploads", type=_fraction_or_count, default=0.3, metavar="F|N",
                   help="uploads without a user: a fraction such as 0.3, or a count such as 25 (default: %(default)s)")
    p.add_argument("--sizes", choices=SIZES, default="mixed",
                   help="blob sizes: small (~4 KiB), mixed (0 B to tens of MiB, long tail), large (4 to 128 MiB) "
                   "(default: %(default)s)")
    p.add_argument("--legacy-fraction", type=_fraction, default=0.05, metavar="F",
                   help="fraction of blobs stored in plik's pre-1.3 layout Directory/UU/UPLOADID/FILEID "
                   "(default: %(default)s)")
    p.add_argument("--seed", type=int, default=1, help="random seed: the same seed gives the same rows and bytes (default: %(default)s)")
    p.add_argument("--metadata-only", action="store_true",
                   help="write no blobs; sizes and md5 are still filled (default: off)")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--metadata-config", metavar="CFG", default=None,
                        help="write the metadata into the database named by MetadataBackendConfig of this plikd.cfg "
                        "(it must hold no Plik tables) (default: SQLite DIR/plik.db)")
    target.add_argument("--metadata-url", metavar="URL", default=None,
                        help="write the metadata into this SQLAlchemy URL, e.g. postgresql://u:p@host/db or "
                        "mysql://u:p@host/db (it must hold no Plik tables) (default: SQLite DIR/plik.db)")
    p.add_argument("--parts", type=_count, default=None, metavar="N",
                   help="split the uploads into N parts over whole days; the rows depend on the seed and N "
                   "(default: one part per 100000 files)")
    p.add_argument("--jobs", type=_count, default=1, metavar="N",
                   help="worker processes making the parts; the rows do not depend on it. More than 1 pays on "
                   "idle CPUs only: SQLite parts are then copied in at the end (default: %(default)s)")
    p.add_argument("--batch-size", type=_count, default=20_000, metavar="N",
                   help="rows per insert batch and transaction (default: %(default)s)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar, one summary line (default: off)")


@dataclass(frozen=True)
class Target:
    """Where the metadata goes, as plikd's Driver and ConnectionString."""

    driver: str
    connection_string: str

    def meta(self):
        from pmigrate.config import MetadataConfig

        return MetadataConfig(self.driver, self.connection_string)


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    out = Path(args.out).absolute()
    _check_empty(out)
    shape = _shape(args)
    target = _target(args, out)
    if args.metadata_config or args.metadata_url:
        _check_target(target)  # before anything is written
    out.mkdir(parents=True, exist_ok=True)
    engine = _engine(target)
    try:
        files_dir = out / FILES_DIR
        files_dir.mkdir()
        from pmigrate.metadata.schema import create_schema

        with engine.begin() as conn:
            create_schema(conn, driver=target.driver, level=tables.SCHEMA_LEVEL)
        totals = _fill(engine=engine, target=target, shape=shape, args=args, files_dir=files_dir)
    finally:
        engine.dispose()
    cfg = out / CONFIG_NAME
    cfg.write_text(plikd_cfg(directory=files_dir, target=target, seed=args.seed), encoding="utf-8")
    _summary(args=args, out=out, target=target, shape=shape, totals=totals, cfg=cfg,
             seconds=time.monotonic() - started)
    return 0


def _check_empty(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} is not an empty folder: fakedb only writes into a new or empty DIR; remove it or pick another")


def _shape(args: argparse.Namespace) -> Shape:
    files = args.files
    uploads = args.uploads if args.uploads is not None else max(1, files // 3)
    users = args.users if args.users is not None else max(1, min(uploads // 10, 10_000))
    if files and not uploads:
        raise ConfigError("--uploads 0 leaves nowhere to put files: give at least one upload or --files 0")
    anon = args.anon_uploads
    anon_count = round(anon * uploads) if isinstance(anon, float) else anon
    if anon_count > uploads:
        raise ConfigError(f"--anon-uploads {anon} is more than the {uploads} uploads: lower it or raise --uploads")
    if not users:
        anon_count = uploads
    return Shape(users=users, uploads=uploads, files=files, anon_uploads=anon_count, sizes=args.sizes,
                 legacy_fraction=args.legacy_fraction)


def _target(args: argparse.Namespace, out: Path) -> Target:
    if args.metadata_config:
        from pmigrate import config
        from pmigrate.metadata import db

        meta = config.load(Path(args.metadata_config)).metadata
        sqlite = db.sqlite_file(meta)
        # An absolute path, so that DIR/plikd.cfg works from any folder.
        return Target(meta.driver, str(sqlite.absolute()) if sqlite else meta.connection_string)
    if args.metadata_url:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(args.metadata_url)
        except ArgumentError:
            raise ConfigError(redact(f"--metadata-url {args.metadata_url!r} is not a database URL: write it as "
                                     "postgresql://user:password@host:5432/db or mysql://user:password@host:3306/db")) from None
        return target_from_url(url)
    return Target("sqlite3", str(out / DB_NAME))


def target_from_url(url) -> Target:
    """plikd's Driver and ConnectionString for a SQLAlchemy URL (mysql: loc=UTC, as fakedb writes UTC)."""
    backend = url.get_backend_name()
    user = url.username or ""
    password = url.password or ""
    secrets.register(password or None)
    host, db = url.host or "127.0.0.1", url.database or ""
    if not db and backend != "sqlite":
        raise ConfigError("--metadata-url names no database: add /dbname at the end")
    if backend == "postgresql":
        auth = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "")
        dsn = f"postgres://{auth}{'@' if auth else ''}{host}:{url.port or 5432}/{quote(db, safe='')}?sslmode=disable"
        return Target("postgres", dsn)
    if backend in ("mysql", "mariadb"):
        if "@" in password:
            raise ConfigError("a mysql password with '@' cannot go in plikd's DSN: use another password")
        auth = f"{user}:{password}" if password else user
        dsn = f"{auth}@tcp({host}:{url.port or 3306})/{db}?charset=utf8mb4&parseTime=True&loc=UTC"
        return Target("mysql", dsn)
    if backend == "sqlite":
        if not db or db == ":memory:":
            raise ConfigError("--metadata-url sqlite needs a file: sqlite:////absolute/path/plik.db")
        return Target("sqlite3", str(Path(db).absolute()))
    raise ConfigError(f"--metadata-url: Plik has no {backend} driver; use postgresql://, mysql:// or sqlite:///")


def _engine(target: Target):
    from pmigrate.metadata import db

    return db.engine(target.meta())


def _check_target(target: Target) -> None:
    """Reachable, and holding no Plik table: fakedb never writes over a deployment."""
    import sqlalchemy
    from sqlalchemy.exc import SQLAlchemyError

    from pmigrate.metadata import db

    meta = target.meta()
    db.check_connect(meta, must_exist=False)
    path = db.sqlite_file(meta)
    if path is not None and not path.exists():
        return
    engine = db.engine(meta)
    try:
        with engine.connect() as conn:
            present = set(sqlalchemy.inspect(conn).get_table_names())
    except SQLAlchemyError as exc:
        raise ConfigError(db.explain(exc, meta)) from None
    finally:
        engine.dispose()
    clash = sorted(present & {t.name for t in tables.ALL})
    if clash:
        raise ConfigError(redact(f"{meta.describe()} already holds Plik tables ({', '.join(clash)}): "
                                 "give fakedb an empty database"))


@dataclass
class Totals:
    counts: dict[str, int]
    bytes_stored: int = 0
    blob_count: int = 0
    legacy: int = 0


def _fill(*, engine, target: Target, shape: Shape, args: argparse.Namespace, files_dir: Path) -> Totals:
    from pmigrate.fake import parallel
    from pmigrate.fake.rows import plan_parts
    from pmigrate.fake.sink import Writer, clock_for
    from pmigrate.metadata.values import zone_of
    from pmigrate.progress import bar

    zone = zone_of(target.meta()) if target.driver == "mysql" else None
    gen = Generator(seed=args.seed, shape=shape, blobs=None, clock=clock_for(target.driver, mysql_zone=zone))
    batch = max(args.batch_size, 1)
    raw = engine.raw_connection()
    try:
        w = Writer(dbapi_conn=raw.driver_connection, driver=target.driver)
        w.defer_indexes()
        w.insert_all(tables.USERS, gen.users_rows(), batch=batch)
        w.insert_all(tables.TOKENS, gen.tokens_rows(), batch=batch)
        totals = Totals(w.counts)
        job = parallel.Job(seed=args.seed, shape=shape, parts=tuple(plan_parts(shape, parts=args.parts)),
                           users=tuple(gen.users), driver=target.driver, connection_string=target.connection_string,
                           mysql_zone=zone, files_dir=None if args.metadata_only else files_dir,
                           part_dir=files_dir.parent, batch=batch)
        with bar(quiet=args.quiet or not sys.stderr.isatty(), desc="files", total=shape.files, unit="row") as progress:
            for done in parallel.run(job, jobs=max(args.jobs, 1), writer=w, progress=progress.update):
                gen.usage.merge(done.usage)
                totals.bytes_stored += done.bytes_stored
                totals.blob_count += done.blob_count
                totals.legacy += done.legacy
        w.insert_all(tables.SETTINGS, gen.settings_rows(), batch=batch)
        w.insert_all(tables.USAGE_STATS, gen.usage_rows(), batch=batch)
        w.insert_all(tables.MIGRATIONS_TABLE, gen.migrations_rows(), batch=batch)
        w.restore_indexes()
        return totals
    finally:
        raw.close()


def plikd_cfg(*, directory: Path, target: Target, seed: int) -> str:
    """A plikd.cfg for the deployment: file data backend, the metadata database as plikd connects to it."""
    s = lambda v: json.dumps(v, ensure_ascii=False)  # noqa: E731 - a JSON string is a TOML basic string
    return (
        f"# Fake Plik deployment written by 'pmigrate fakedb --seed {seed}' (schema {tables.SCHEMA_LEVEL}).\n"
        f'DataBackend = "file"\n'
        f"\n[DataBackendConfig]\n"
        f"  Directory = {s(str(directory))}\n"
        f"\n[MetadataBackendConfig]\n"
        f"  Driver = {s(target.driver)}\n"
        f"  ConnectionString = {s(target.connection_string)}\n"
    )


def _summary(*, args, out: Path, target: Target, shape: Shape, totals: Totals, cfg: Path,
             seconds: float) -> None:
    where = redact(f"{target.driver} {target.connection_string}")
    counts = totals.counts
    if args.quiet:
        blobs = "no blobs" if args.metadata_only else f"{plural(totals.blob_count, 'blob')} ({size(totals.bytes_stored)})"
        print(f"fakedb: {out}: {plural(counts.get('files', 0), 'file')}, {blobs}, metadata in {where}, "
              f"config {cfg} ({seconds:.1f} s)")
        return
    rows = ", ".join(f"{t.name} {counts.get(t.name, 0)}" for t in tables.ALL)
    blobs = ("none (--metadata-only)" if args.metadata_only else
             f"{totals.blob_count} in {out / FILES_DIR}, {size(totals.bytes_stored)}, "
             f"{totals.legacy} in the pre-1.3 layout")
    lines = [
        f"fakedb: a Plik deployment at schema {tables.SCHEMA_LEVEL} in {out} (seed {args.seed}, sizes {shape.sizes})",
        f"  metadata  {where}",
        f"  rows      {rows}",
        f"            ({shape.anon_uploads} anonymous and {soft_deleted_count(shape)} soft-deleted uploads)",
        f"  blobs     {blobs}",
        f"  config    {cfg}",
        f"  took      {seconds:.1f} s",
    ]
    sys.stdout.write("\n".join(lines) + "\n")
