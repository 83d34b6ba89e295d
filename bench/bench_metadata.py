#!/usr/bin/env python3
"""Metadata copy throughput: a Plik sqlite3 database with N files, migrated by the real CLI.

    .venv/bin/python bench/bench_metadata.py [--files 1000000] [--rounds 1] [--out DIR]

Each round copies the same source into fresh targets: sqlite3 -> postgres,
-> mysql, -> sqlite3 with `pmigrate --metadata-only`, and sqlite3 -> postgres
with pgloader (installed with apt-get when absent, or skipped with a message),
alternating the tools. Prints rows/s and the peak RSS of each process
(os.wait4's ru_maxrss: the pmigrate process itself, not its database server).

The source is made by `pmigrate fakedb DIR --files N --metadata-only` when
that command exists; otherwise by the small generator below (a 0011 schema:
users, tokens, uploads with a tenth soft-deleted, files in every status).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import write_csv  # noqa: E402

PG = dict(host="127.0.0.1", port=5432, user="postgres")
MY = dict(host="127.0.0.1", port=3306, user="root")


# -- source --------------------------------------------------------------------


def generate(path: Path, *, files: int, seed: int = 7) -> int:
    """A 0011-stats sqlite3 database: files/4 uploads, files/1000 users; returns the row count."""
    from pmigrate.metadata import schema

    rnd = random.Random(seed)
    con = sqlite3.connect(path)
    for stmt in schema.ddl(driver="sqlite3", level="0011-stats"):
        con.execute(stmt)
    ids = lambda n, p: [f"{p}{i:0{16 - len(p)}d}" for i in range(n)]  # noqa: E731
    n_users = max(1, files // 1000)
    n_uploads = max(1, files // 4)
    users = ids(n_users, "U")
    ts = lambda i: f"2026-07-08 12:{(i // 60) % 60:02d}:{i % 60:02d}.{rnd.randrange(10**9):09d}+02:00"  # noqa: E731
    con.executemany(
        "INSERT INTO users VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        [(f"local:{u}", "local", u, "$2a$14$x", f"User {u} 愛", f"{u}@example.org", "", "", "", i == 0, 0, 0, 0, ts(i)) for i, u in enumerate(users)],
    )
    con.executemany(
        "INSERT INTO tokens VALUES (?,?,?,?)",
        [(str(uuid.UUID(int=rnd.getrandbits(128))), "token", f"local:{u}", ts(i)) for i, u in enumerate(users)],
    )
    uploads = ids(n_uploads, "P")

    def upload_rows():
        for i, u in enumerate(uploads):
            deleted = ts(i) if i % 10 == 0 else None
            yield (
                u, 86400, 0, "10.0.0.1", "comment الحب", "", "TOKEN" + u, f"local:{users[i % n_users]}", "", 0, i % 7 == 0, 1, 0, "", "",
                i % 5, None, 0, ts(i), deleted, ts(i + 86400),
            )  # fmt: skip

    con.executemany("INSERT INTO uploads VALUES (" + ",".join("?" * 21) + ")", upload_rows())
    statuses = ("uploaded", "uploaded", "uploaded", "removed", "deleted", "missing", "uploading")

    def file_rows():
        for i, f in enumerate(ids(files, "F")):
            md5 = f"{rnd.getrandbits(128):032x}"
            yield (f, uploads[i % n_uploads], f"file-{i}.txt", statuses[i % 7], md5, "text/plain", rnd.randrange(1 << 30), i % 3 == 0, "", "", 0, None, ts(i))

    con.executemany("INSERT INTO files VALUES (" + ",".join("?" * 13) + ")", file_rows())
    con.executemany("INSERT INTO settings VALUES (?,?)", [("key1", "val1")])
    con.executemany("INSERT INTO migrations VALUES (?)", [("SCHEMA_INIT",)] + [(m,) for m in schema.MIGRATION_IDS])
    con.commit()
    total = sum(con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("users", "tokens", "uploads", "files", "settings", "migrations"))
    con.close()
    return total


def make_source(work: Path, *, files: int) -> tuple[Path, str]:
    """(sqlite file, how it was made)."""
    src = work / "src"
    probe = subprocess.run([sys.executable, "-m", "pmigrate", "fakedb", "--help"], capture_output=True, text=True, cwd=REPO)
    if probe.returncode == 0 and "--metadata-only" in probe.stdout and "--files" in probe.stdout:
        r = subprocess.run(
            [sys.executable, "-m", "pmigrate", "fakedb", str(src), "--files", str(files), "--metadata-only", "-q"],
            cwd=REPO, capture_output=True, text=True,
        )
        dbs = sorted(src.glob("*.db"))
        if r.returncode == 0 and dbs:
            return dbs[0], "pmigrate fakedb"
        print(f"fakedb failed ({r.stderr.strip()[-200:]}); using the built-in generator", file=sys.stderr)
        shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True, exist_ok=True)
    generate(src / "plik.db", files=files)
    return src / "plik.db", "built-in generator"


def source_rows(db: Path) -> int:
    con = sqlite3.connect(db)
    try:
        names = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'") if r[0] != "cli_auth_sessions"]
        return sum(con.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in names)
    finally:
        con.close()


# -- targets -------------------------------------------------------------------


def pg_admin(sql: str) -> None:
    subprocess.run(["psql", "-X", "-q", "-h", PG["host"], "-U", PG["user"], "-d", "postgres", "-c", sql], check=True, capture_output=True)


def my_admin(sql: str) -> None:
    subprocess.run(["mariadb", "-h", MY["host"], "-P", str(MY["port"]), "-u", MY["user"], "-e", sql], check=True, capture_output=True)


class Target:
    def __init__(self, driver: str, work: Path, name: str) -> None:
        self.driver, self.name = driver, name
        self.path = work / f"{name}.db"

    def create(self) -> None:
        if self.driver == "postgres":
            pg_admin(f'CREATE DATABASE "{self.name}"')
        elif self.driver == "mysql":
            my_admin(f"CREATE DATABASE `{self.name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci")

    def drop(self) -> None:
        if self.driver == "postgres":
            pg_admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        elif self.driver == "mysql":
            my_admin(f"DROP DATABASE IF EXISTS `{self.name}`")
        else:
            self.path.unlink(missing_ok=True)

    def go_dsn(self) -> str:
        if self.driver == "postgres":
            return f"host={PG['host']} port={PG['port']} user={PG['user']} dbname={self.name} sslmode=disable"
        if self.driver == "mysql":
            return f"{MY['user']}:@tcp({MY['host']}:{MY['port']})/{self.name}?charset=utf8mb4&parseTime=True&loc=Local"
        return str(self.path)


def cfg(path: Path, driver: str, dsn: str) -> Path:
    path.write_text(
        f'DataBackend = "file"\n[DataBackendConfig]\n  Directory = "{path.parent / (path.stem + "-files")}"\n'
        f'[MetadataBackendConfig]\n  Driver = "{driver}"\n  ConnectionString = "{dsn}"\n'
    )
    return path


def timed(cmd: list[str], *, env: dict | None = None) -> tuple[float, int, int, str, float]:
    """(seconds, peak RSS in MB of that process, exit code, stderr tail, its CPU seconds)."""
    t0 = time.perf_counter()
    err = tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=REPO)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err.seek(0)
    tail = err.read().decode(errors="replace")[-400:]
    return seconds, usage.ru_maxrss // 1024, proc.returncode, tail, usage.ru_utime + usage.ru_stime


def run_pmigrate(src_cfg: Path, target: Target, work: Path) -> tuple[float, int, int, str, float, dict]:
    dst_cfg = cfg(work / f"{target.name}.cfg", target.driver, target.go_dsn())
    report = work / f"{target.name}.json"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    secs, rss, rc, tail, cpu = timed(
        [sys.executable, "-m", "pmigrate", "--config", str(src_cfg), "--to", str(dst_cfg), "--metadata-only", "-q", "--json", str(report)],
        env=env,
    )
    data = json.loads(report.read_text()) if report.exists() else {}
    return secs, rss, rc, tail, cpu, data


def ensure_pgloader() -> str | None:
    exe = shutil.which("pgloader")
    if exe:
        return exe
    print("pgloader absent: installing the Debian package (apt-get install -y pgloader)...", file=sys.stderr)
    r = subprocess.run(["apt-get", "install", "-y", "-q", "pgloader"], capture_output=True, text=True,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    if r.returncode != 0:
        print(f"pgloader could not be installed ({r.stderr.strip()[-200:]}): its row is skipped", file=sys.stderr)
        return None
    return shutil.which("pgloader")


def run_pgloader(exe: str, src: Path, target: Target, work: Path) -> tuple[float, int, int, str, float]:
    url = f"postgresql://{PG['user']}@{PG['host']}:{PG['port']}/{target.name}"
    # Its default read-ahead (100,000 rows per table) crashes its SBCL heap ("GC invariant lost")
    # on a million files here; 10,000 is its documented knob for that, and no slower.
    return timed([exe, "--no-ssl-cert-verification", "--quiet", "--with", "prefetch rows = 10000", f"sqlite://{src}", url])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one, removed after)")
    ap.add_argument("--no-pgloader", action="store_true", help="skip the pgloader row")
    ap.add_argument("--source", type=Path, default=None, help="an existing Plik sqlite3 database to use instead of making one")
    ap.add_argument("--targets", default="postgres,pgloader,mysql,sqlite3", help="rows to run (default: %(default)s)")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="pmbench-", dir=args.out))
    try:
        t0 = time.perf_counter()
        if args.source:
            if not args.source.is_file():
                sys.exit(f"bench_metadata: --source {args.source} is not a file: name an existing Plik sqlite3 database")
            src, how = args.source.resolve(), "given"
        else:
            src, how = make_source(work, files=args.files)
        rows = source_rows(src)
        print(f"source: {src} ({how}), {rows:,} rows, made in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
        src_cfg = cfg(work / "src.cfg", "sqlite3", str(src))
        pgloader = None if args.no_pgloader else ensure_pgloader()
        results: dict[str, list[tuple[float, int, float]]] = {}
        load_before = os.getloadavg()[0]
        tag = uuid.uuid4().hex[:8]
        for rnd in range(args.rounds):
            cases = [("postgres", "pmigrate"), ("pgloader", "pgloader"), ("mysql", "pmigrate"), ("sqlite3", "pmigrate")]
            if rnd % 2:
                cases = [cases[1], cases[0], *cases[2:]]  # alternate A and B
            for driver, tool in cases:
                if driver not in args.targets.split(","):
                    continue
                label = f"sqlite3 -> {'postgres' if driver == 'pgloader' else driver} ({tool})"
                if tool == "pgloader" and pgloader is None:
                    continue
                target = Target("postgres" if driver == "pgloader" else driver, work, f"pmbench_{tag}_{rnd}_{driver}")
                target.create()
                try:
                    if tool == "pgloader":
                        secs, rss, rc, tail, cpu = run_pgloader(pgloader, src, target, work)
                    else:
                        secs, rss, rc, tail, cpu, data = run_pmigrate(src_cfg, target, work)
                        if rc == 0 and not data.get("sections", {}).get("metadata", {}).get("ok"):
                            rc = -1
                finally:
                    target.drop()
                if rc != 0:
                    print(f"{label}: exit {rc}: {tail}", file=sys.stderr)
                    continue
                results.setdefault(label, []).append((secs, rss, cpu))
                print(f"  round {rnd + 1}: {label}: {secs:.1f}s", file=sys.stderr)
        if pgloader is None and not args.no_pgloader:
            print("pgloader: skipped (not installable here)")
        print(
            f"\n{rows:,} rows from {src.name} ({how}), best of {args.rounds} round(s); {os.cpu_count()} cores, "
            f"load average {load_before:.1f} before and {os.getloadavg()[0]:.1f} after"
        )
        table: list[dict] = []
        print(f"{'direction':<38} {'seconds':>8} {'rows/s':>10} {'peak RSS MB':>12} {'CPU s':>7}")
        for label, runs in results.items():
            secs, _, cpu = min(runs)
            rss = max(r for _, r, _ in runs)
            print(f"{label:<38} {secs:>8.1f} {rows / secs:>10,.0f} {rss:>12} {cpu:>7.1f}")
            direction, tool = label.rsplit(" (", 1)
            table.append({"direction": direction, "tool": tool.rstrip(")"), "files": args.files, "rows": rows,
                          "rounds": len(runs), "seconds": secs, "rows_per_s": rows / secs, "peak_rss_mb": rss,
                          "cpu_s": cpu})
        print("CPU s: user+sys of the tool's own process (not the database servers')")
        write_csv("metadata", table, keys=("direction", "tool", "files"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
