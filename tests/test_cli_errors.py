"""Every expected failure, through the real CLI: exit 2, one line on stderr naming cause and fix, no traceback."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import pytest

from tests import servers


def sqlite_deployment(folder: Path, *, name: str = "plikd.cfg", create_db: bool = True) -> Path:
    """A file + sqlite3 deployment with absolute paths (no relative-path warnings)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "files").mkdir(exist_ok=True)
    if create_db:
        sqlite3.connect(folder / "plik.db").close()
    cfg = folder / name
    cfg.write_text(
        f'DataBackend = "file"\n[DataBackendConfig]\n  Directory = "{folder / "files"}"\n'
        f'[MetadataBackendConfig]\n  Driver = "sqlite3"\n  ConnectionString = "{folder / "plik.db"}"\n'
    )
    return cfg


def assert_usage_error(proc, *needles: str) -> str:
    """Exit 2, exactly one line on stderr holding every needle, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert lines[0].startswith("pmigrate") and "error: " in lines[0], lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture
def pair(tmp_path):
    return sqlite_deployment(tmp_path / "src"), sqlite_deployment(tmp_path / "dst", create_db=False)


def test_missing_config_file(run_cli, pair, tmp_path):
    _, dst = pair
    assert_usage_error(run_cli("--config", str(tmp_path / "nope.cfg"), "--to", str(dst)), "nope.cfg", "does not exist")
    assert_usage_error(run_cli("--config", str(pair[0]), "--to", str(tmp_path / "gone.cfg")), "gone.cfg", "does not exist")


def test_missing_config_from_env(run_cli, pair, tmp_path):
    assert_usage_error(
        run_cli("--to", str(pair[1]), env={"PLIKD_CONFIG": str(tmp_path / "env.cfg")}), "env.cfg", "does not exist"
    )


@pytest.mark.skipif(Path("/etc/plikd.cfg").exists(), reason="this machine has an /etc/plikd.cfg")
def test_no_source_config_anywhere(run_cli, pair, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_usage_error(run_cli("--to", str(pair[1]), cwd=empty), "no source config", "--config", "PLIKD_CONFIG")


def test_source_found_in_working_directory(run_cli, tmp_path):
    src = sqlite_deployment(tmp_path / "here")
    dst = sqlite_deployment(tmp_path / "dst", create_db=False)
    (src.parent / "plik.db").unlink()  # so that the run stops at a message proving which file was read
    proc = run_cli("--to", str(dst), "--dry-run", cwd=src.parent)
    assert_usage_error(proc, str(src.parent / "plik.db"), "does not exist")


def test_config_is_a_directory(run_cli, pair, tmp_path):
    assert_usage_error(run_cli("--config", str(tmp_path), "--to", str(pair[1])), "is a directory")


def test_toml_syntax_error_names_file_and_line(run_cli, pair, tmp_path):
    bad = tmp_path / "bad.cfg"
    bad.write_text('DataBackend = "file"\n[DataBackendConfig]\n  Directory = "unterminated\n')
    assert_usage_error(run_cli("--config", str(bad), "--to", str(pair[1])), str(bad), "line 3", "TOML")


def test_unknown_backend_and_driver(run_cli, pair, tmp_path):
    ftp = tmp_path / "ftp.cfg"
    ftp.write_text('DataBackend = "ftp"\n')
    assert_usage_error(run_cli("--config", str(pair[0]), "--to", str(ftp)), "unknown DataBackend 'ftp'", "use one of")
    oracle = tmp_path / "oracle.cfg"
    oracle.write_text('[MetadataBackendConfig]\nDriver = "oracle"\nConnectionString = "x"\n')
    assert_usage_error(run_cli("--config", str(oracle), "--to", str(pair[1])), "unknown MetadataBackendConfig.Driver")


def test_bad_s3_settings(run_cli, pair, tmp_path):
    s3 = tmp_path / "s3.cfg"
    s3.write_text('DataBackend = "s3"\n[DataBackendConfig]\nEndpoint = "h:9000"\nAccessKeyID = "a"\n')
    assert_usage_error(run_cli("--config", str(pair[0]), "--to", str(s3)), "SecretAccessKey is missing")
    s3.write_text(
        'DataBackend = "s3"\n[DataBackendConfig]\nEndpoint = "h:9000"\nAccessKeyID = "a"\nSecretAccessKey = "b"\nPartSize = 1024\n'
    )
    assert_usage_error(run_cli("--config", str(pair[0]), "--to", str(s3)), "under 5 MiB")


def test_missing_sqlite_source(run_cli, tmp_path):
    src = sqlite_deployment(tmp_path / "src", create_db=False)
    dst = sqlite_deployment(tmp_path / "dst", create_db=False)
    assert_usage_error(run_cli("--config", str(src), "--to", str(dst), "--dry-run"), "plik.db", "does not exist")
    assert not (tmp_path / "src" / "plik.db").exists()


def test_unreachable_server(run_cli, pair, tmp_path):
    port = servers.free_port()
    cfg = tmp_path / "pg.cfg"
    cfg.write_text(
        f'[MetadataBackendConfig]\nDriver = "postgres"\n'
        f'ConnectionString = "host=127.0.0.1 port={port} user=plik dbname=plik connect_timeout=3"\n'
    )
    line = assert_usage_error(run_cli("--config", str(cfg), "--to", str(pair[1]), "--metadata-only"), "server unreachable")
    assert f"127.0.0.1:{port}" in line


def test_wrong_credentials(run_cli, pair, tmp_path, mysql_server, mysql_db):
    name = f"pmt_{uuid.uuid4().hex[:8]}"
    c = mysql_server.admin()
    with c.cursor() as cur:
        cur.execute(f"CREATE USER '{name}'@'%' IDENTIFIED BY 'right-password'")
    try:
        cfg = tmp_path / "my.cfg"
        cfg.write_text(
            f'[MetadataBackendConfig]\nDriver = "mysql"\n'
            f'ConnectionString = "{name}:wrong-password@tcp({servers.MY_HOST}:{servers.MY_PORT})/{mysql_db.name}"\n'
        )
        line = assert_usage_error(run_cli("--config", str(cfg), "--to", str(pair[1]), "--metadata-only"), "wrong user or password")
        assert "wrong-password" not in line
    finally:
        with c.cursor() as cur:
            cur.execute(f"DROP USER IF EXISTS '{name}'@'%'")
        c.close()


def test_missing_server_database(run_cli, pair, tmp_path, pg_server):
    cfg = tmp_path / "pg.cfg"
    cfg.write_text(
        f'[MetadataBackendConfig]\nDriver = "postgres"\nConnectionString = '
        f'"host={servers.PG_HOST} port={servers.PG_PORT} user={servers.PG_USER} dbname=pmt_absent_{uuid.uuid4().hex[:6]}"\n'
    )
    assert_usage_error(run_cli("--config", str(cfg), "--to", str(pair[1]), "--metadata-only"), "does not exist")


@pytest.mark.parametrize(
    "args,needles",
    [
        (["--metadata-only", "--data-only"], ["--data-only", "not allowed with", "--metadata-only"]),
        (["--workers", "0"], ["--workers", "at least 1"]),
        (["--workers", "-3"], ["--workers"]),
        (["--workers", "many"], ["--workers", "not a whole number"]),
        (["--batch-size", "0"], ["--batch-size"]),
        (["--checksum", "sha1"], ["--checksum", "invalid choice"]),
        (["--no-such-option"], ["unrecognized arguments"]),
    ],
)
def test_usage_errors(run_cli, pair, args, needles):
    assert_usage_error(run_cli("--config", str(pair[0]), "--to", str(pair[1]), *args), *needles)


def test_usage_errors_in_verify(run_cli, pair):
    assert_usage_error(run_cli("verify", "--config", str(pair[0])), "--to")
    assert_usage_error(run_cli("verify", "--to", str(pair[1]), "--metadata-only", "--data-only"), "not allowed with")


def test_missing_target_option(run_cli, pair):
    assert_usage_error(run_cli("--config", str(pair[0])), "--to")


def test_same_database_and_location_refused(run_cli, pair, tmp_path):
    src, _ = pair
    assert_usage_error(run_cli("--config", str(src), "--to", str(src)), "same database")
    other = tmp_path / "other.cfg"
    other.write_text(
        f'DataBackend = "file"\n[DataBackendConfig]\n  Directory = "{src.parent / "files"}/"\n'
        f'[MetadataBackendConfig]\n  Driver = "sqlite3"\n  ConnectionString = "{tmp_path / "new.db"}"\n'
    )
    assert_usage_error(run_cli("--config", str(src), "--to", str(other)), "same data location")


def test_target_without_metadata_section(run_cli, pair, tmp_path):
    data_only = tmp_path / "data.cfg"
    data_only.write_text(f'DataBackend = "file"\n[DataBackendConfig]\n  Directory = "{tmp_path / "new"}"\n')
    assert_usage_error(run_cli("--config", str(pair[0]), "--to", str(data_only)), "no [MetadataBackendConfig]", "--data-only")


def test_bad_environment_override(run_cli, pair):
    proc = run_cli("--config", str(pair[0]), "--to", str(pair[1]), env={"PLIKD_DATA_BACKEND_CONFIG": "{Directory: x}"})
    assert_usage_error(proc, "PLIKD_DATA_BACKEND_CONFIG", "JSON")


def test_json_report_in_missing_folder(run_cli, pair, tmp_path):
    proc = run_cli("--config", str(pair[0]), "--to", str(pair[1]), "--json", str(tmp_path / "no" / "r.json"))
    assert_usage_error(proc, "--json", "does not exist")


def test_verbose_may_add_detail_but_no_raw_traceback_without_it(run_cli, pair, tmp_path):
    bad = tmp_path / "bad.cfg"
    bad.write_text("DataBackend = \n")
    quiet = run_cli("--config", str(bad), "--to", str(pair[1]))
    assert_usage_error(quiet, "line 1")
    loud = run_cli("-v", "--config", str(bad), "--to", str(pair[1]))
    assert loud.returncode == 2 and loud.stderr.splitlines()[-1] == quiet.stderr.splitlines()[-1]
