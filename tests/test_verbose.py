"""-v tells each step of a run that goes well, and still shows no secret."""

from __future__ import annotations

import re

from tests import blobdeploy as bd
from tests import servers

S3_SECRET = "s3-Verbose-Secret-Key-8841"
PG_SECRET = servers.PG_PASSWORD or "pg-Verbose-Secret-3093"  # trust auth takes any password


def _source(tmp_path, run_cli, pg_db):
    """A fake deployment: metadata in PostgreSQL through a DSN holding a password, blobs in a folder."""
    dsn = pg_db.go_dsn if servers.PG_PASSWORD else f"{pg_db.go_dsn} password={PG_SECRET}"
    meta = tmp_path / "meta.cfg"
    meta.write_text(f'[MetadataBackendConfig]\n  Driver = "postgres"\n  ConnectionString = "{dsn}"\n')
    made = run_cli("fakedb", str(tmp_path / "src"), "--files", "40", "--seed", "5", "--metadata-config", str(meta), "-q")
    assert made.returncode == 0, made.stderr
    cfg = tmp_path / "src" / "plikd.cfg"
    assert PG_SECRET in cfg.read_text()
    return cfg


def test_verbose_logs_configs_stages_pool_parts_journal_and_memory_without_secrets(tmp_path, run_cli, pg_db, s3_server, s3_bucket):
    src = _source(tmp_path, run_cli, pg_db)
    target = tmp_path / "dst" / "target.cfg"
    target.parent.mkdir()
    target.write_text(
        s3_server.toml(s3_bucket, extra="PartSize = 5242880\n").replace(s3_server.secret_key, S3_SECRET)
        + bd.meta_toml(tmp_path / "dst" / "plik.db")
    )
    report = tmp_path / "report.json"
    cp = run_cli("--config", str(src), "--to", str(target), "--workers", "2", "-v", "--stats", "0", "--json", str(report))
    assert cp.returncode == 0, cp.stderr
    err = cp.stderr
    # Configs resolved, described without their secrets.
    src_files = re.escape(str(tmp_path / "src" / "files"))
    src_meta = rf"metadata postgres \S+@127\.0\.0\.1:\d+/{pg_db.name}"
    assert re.search(rf"^pmigrate: info: .*source {re.escape(str(src))}: {src_meta}, data file {src_files}$", err, re.M), err
    s3_data = f"data s3 http://{s3_server.endpoint}/{s3_bucket}"
    assert re.search(rf"^pmigrate: info: .*target {re.escape(str(target))}: metadata sqlite3 .*/dst/plik\.db, {s3_data}$", err, re.M), err
    assert "2 workers, batch size 5000, checksum xxh3" in err
    # Every stage: its checks, its start, its end with its figures.
    for stage in ("metadata", "data"):
        assert re.search(rf"^pmigrate: info: .*{stage}: checks passed in \d+\.\ds$", err, re.M), err
        assert re.search(rf"^pmigrate: info: .*{stage}: started$", err, re.M), err
        assert re.search(rf"^pmigrate: info: .*{stage}: ended in \d+\.\ds$", err, re.M), err
    assert re.search(r"^pmigrate: info: .*metadata: .*rows=\d+, ", err, re.M), err
    assert re.search(r"^pmigrate: info: .*data: .*copied=\d+, bytes=\d+, ", err, re.M), err
    # The pool, the part size, the journal, the memory decision.
    assert "a pool of 2 workers" in err
    assert "up to 4 upload parts of 5.0 MiB at once (2 a worker for 2 workers, within half the " in err
    journal = next((tmp_path / "dst").glob(".pmigrate-journal-*.db"))
    assert f"journal {journal}" in err
    # Steps, not every request a library makes.
    assert len(err.splitlines()) < 100, err[:3000]
    for text in (cp.stdout, err, report.read_text()):
        assert PG_SECRET not in text and S3_SECRET not in text
