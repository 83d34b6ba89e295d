"""What pmigrate prints, through the real CLI: which option named a missing file, one prefix for warnings,
the cost of many workers, counts in words, verify's help, a target that holds no migration, the man page."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from pmigrate.cli import build_parser
from pmigrate.words import plural
from tests import blobdeploy as bd
from tests.servers import unavailable
from tests.test_cli_errors import assert_usage_error

REPO = Path(__file__).resolve().parent.parent


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def fake(tmp_path, run_cli) -> Path:
    """A small fake deployment (every Plik table; settings holds one row), its plikd.cfg."""
    proc = run_cli("fakedb", str(tmp_path / "src"), "--files", "30", "--sizes", "small", "--seed", "3", "-q")
    assert proc.returncode == 0, proc.stderr
    return tmp_path / "src" / "plikd.cfg"


# -- a missing config file names the option that named it ---------------------


def test_a_missing_config_file_says_which_option_named_it(run_cli, tmp_path):
    src = _source(tmp_path)
    target = _write(tmp_path / "dst" / "t.cfg", bd.file_toml(tmp_path / "dst" / "files"))
    assert_usage_error(run_cli("--config", str(tmp_path / "nope.cfg"), "--to", str(target)), "nope.cfg (--config) does not exist")
    assert_usage_error(run_cli("--config", str(src), "--to", str(tmp_path / "gone.cfg")), "gone.cfg (--to) does not exist")
    proc = run_cli("--to", str(target), env={"PLIKD_CONFIG": str(tmp_path / "env.cfg")})
    assert_usage_error(proc, "env.cfg (PLIKD_CONFIG) does not exist")


def _source(tmp_path: Path) -> Path:
    return bd.file_source(tmp_path / "src", bd.make_blobs(1, seed=9)).config


# -- one prefix for every warning -----------------------------------------------


def test_every_warning_has_one_prefix(fake, run_cli, tmp_path):
    con = sqlite3.connect(fake.parent / "plik.db")
    con.execute("CREATE TABLE events (id integer PRIMARY KEY, what text)")  # not Plik's: the copier warns
    con.commit()
    con.close()
    fake.write_text(fake.read_text() + "  MaxOpenConn = 2\n")  # not plikd's: the config loader warns
    target = _write(tmp_path / "dst" / "t.cfg", bd.meta_toml(tmp_path / "dst" / "plik.db"))
    proc = run_cli("--config", str(fake), "--to", str(target), "--metadata-only", "-q")
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in (proc.stdout + proc.stderr).splitlines() if "warning:" in line.lower()]
    assert any("table events is not Plik's" in w for w in warnings), proc.stdout
    assert any("MaxOpenConn" in w for w in warnings), proc.stderr
    assert all(w.startswith("pmigrate: warning: ") for w in warnings), warnings


# -- far more workers than CPUs ---------------------------------------------------


def test_far_more_workers_than_cpus_say_what_they_cost(run_cli, tmp_path):
    src = _source(tmp_path)
    target = bd.file_target(tmp_path / "dst")
    cpus = os.cpu_count() or 1
    many = max(64, 16 * cpus) + 1
    proc = run_cli("--config", str(src), "--to", str(target), "--data-only", "--dry-run", "--workers", str(many))
    assert proc.returncode == 0, proc.stderr
    line = next(w for w in proc.stderr.splitlines() if "--workers" in w)
    assert line.startswith(f"pmigrate: warning: --workers {many} is far above the {plural(cpus, 'CPU')} here")
    assert re.search(r"up to \d+(\.\d)? [MG]iB and \d+ s before the first blob", line), line
    quiet = run_cli("--config", str(src), "--to", str(target), "--data-only", "--dry-run", "--workers", "64")
    assert quiet.returncode == 0 and "--workers" not in quiet.stderr


# -- counts in words ---------------------------------------------------------------


def test_plural():
    assert [plural(n, "blob") for n in (0, 1, 2)] == ["0 blobs", "1 blob", "2 blobs"]
    assert plural(1, "row", width=5) == "    1 row"


def test_one_blob_and_one_row_are_singular(fake, run_cli, tmp_path):
    src = bd.file_source(tmp_path / "one", bd.make_blobs(1, seed=9))
    target = bd.file_target(tmp_path / "dst")
    dry = run_cli("--config", str(src.config), "--to", str(target), "--data-only", "--dry-run", "-q")
    assert "would copy 1 blob, " in dry.stdout, dry.stdout
    copied = run_cli("--config", str(src.config), "--to", str(target), "--data-only", "-q")
    assert "copied 1 blob, " in copied.stdout, copied.stdout
    audit = run_cli("verify", "--config", str(src.config), "--to", str(target), "--data-only", "-q")
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert re.search(r"^  1 file \(", audit.stdout, re.M) and "1 object in the target" in audit.stdout, audit.stdout

    meta_target = _write(tmp_path / "meta" / "t.cfg", bd.meta_toml(tmp_path / "meta" / "plik.db"))
    dry = run_cli("--config", str(fake), "--to", str(meta_target), "--metadata-only", "--dry-run", "-q")
    assert re.search(r"^  settings +1 row$", dry.stdout, re.M), dry.stdout
    run_cli("--config", str(fake), "--to", str(meta_target), "--metadata-only", "-q")
    audit = run_cli("verify", "--config", str(fake), "--to", str(meta_target), "--metadata-only", "-q")
    assert "settings: 1 source row, 1 target row, 1 ok" in audit.stdout, audit.stdout
    assert not re.search(r"\b1 (rows|blobs|files|objects)\b(?!/s)|\(s\)", dry.stdout + copied.stdout + audit.stdout)  # rates are units


# -- verify's help speaks of verifying ---------------------------------------------


def test_verify_help_words_options_for_verifying(run_cli):
    out = run_cli("verify", "--help").stdout
    flat = " ".join(out.split())
    assert "worker processes that read and hash blobs" in flat
    assert "rows read per batch from each database" in flat
    assert "dropped from it so that the next pmigrate run copies it again" in flat
    assert "written" not in flat and "finished blobs" not in flat  # verify writes no row and copies no blob


# -- a target that holds no migration: one message -----------------------------------


def _target_cfg(folder: Path) -> Path:
    return _write(folder / "t.cfg", bd.file_toml(folder / "files") + bd.meta_toml(folder / "plik.db"))


@pytest.mark.parametrize(
    ("state", "args"),
    [
        ("absent", []),
        ("absent", ["--data-only"]),
        ("absent", ["--metadata-only"]),
        ("empty", []),  # an empty folder and a database without Plik's tables
    ],
)
def test_verify_of_a_target_without_migration_says_so_once(fake, run_cli, tmp_path, state, args):
    folder = tmp_path / "never"
    target = _target_cfg(folder)
    if state == "empty":
        (folder / "files").mkdir()
        sqlite3.connect(folder / "plik.db").close()
    proc = run_cli("verify", "--config", str(fake), "--to", str(target), *args)
    assert_usage_error(proc, f"{target} holds no migration from {fake}: run pmigrate first")
    assert proc.stdout == ""
    assert sorted(p.name for p in folder.iterdir()) == (["t.cfg"] if state == "absent" else ["files", "plik.db", "t.cfg"])


def test_verify_of_a_metadata_only_migration_names_the_half_that_is_missing(fake, run_cli, tmp_path):
    target = _target_cfg(tmp_path / "half")
    proc = run_cli("--config", str(fake), "--to", str(target), "--metadata-only", "-q")
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("verify", "--config", str(fake), "--to", str(target))
    assert_usage_error(proc, "holds no blobs migrated from", "--metadata-only")
    assert run_cli("verify", "--config", str(fake), "--to", str(target), "--metadata-only", "-q").returncode == 0


@pytest.mark.s3
def test_verify_of_a_bucket_without_migration_says_so_once(fake, run_cli, tmp_path, s3_server, s3_bucket):
    for bucket in (s3_bucket, "pmt-never-created"):  # empty, then absent
        target = _write(tmp_path / bucket / "t.cfg", s3_server.toml(bucket))
        proc = run_cli("verify", "--config", str(fake), "--to", str(target), "--data-only")
        assert_usage_error(proc, f"{target} holds no migration from {fake}: run pmigrate first")


def test_verify_of_a_source_without_blobs_is_not_refused(run_cli, tmp_path):
    """Nothing to copy leaves an empty store: that is a complete migration, not a missing one."""
    src = bd.file_source(tmp_path / "src", [])
    (tmp_path / "src" / "files").mkdir()
    target = bd.file_target(tmp_path / "dst")
    (tmp_path / "dst" / "files").mkdir()
    proc = run_cli("verify", "--config", str(src.config), "--to", str(target), "--data-only", "-q")
    assert proc.returncode == 0, proc.stdout + proc.stderr


# -- the man page ----------------------------------------------------------------------


def test_the_man_page_has_no_placeholder_and_lists_options_before_commands(tmp_path):
    """`make man` with this interpreter's argparse-manpage (the test extra), written into tmp_path."""
    tool = Path(sys.executable).parent / "argparse-manpage"
    if not tool.exists() or shutil.which("make") is None:
        unavailable("argparse-manpage (the test extra) or make is not installed")
    stamps = [tmp_path / "installed", tmp_path / "installed-docs"]
    for stamp in stamps:
        stamp.touch()  # newer than pyproject.toml: make installs nothing
    page = tmp_path / "pmigrate.1"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    subprocess.run(
        ["make", "-s", "-C", str(REPO), "man", f"BIN={tool.parent}", f"STAMP={stamps[0]}", f"DOCS_STAMP={stamps[1]}", f"MANPAGE={page}"],
        check=True, capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    text = page.read_text()
    assert "example.invalid" not in text and ".SH DISTRIBUTION" not in text
    assert "plikd(1)" not in text
    heads = re.findall(r"^\.SH (.+)$", text, re.M)
    assert heads.index("OPTIONS") < next(i for i, h in enumerate(heads) if h.startswith("COMMAND"))
    flat = " ".join(text.split())
    assert " ".join(build_parser().description.split()) not in flat  # said by NAME and DESCRIPTION already
    assert flat.count("Without a command it migrates") == 1
