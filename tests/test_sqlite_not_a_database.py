"""An sqlite3 file that is not a database is bad input: exit 2, one line naming the file, nothing written."""

from __future__ import annotations

import pytest

from tests.test_cli_errors import assert_usage_error, sqlite_deployment


@pytest.mark.parametrize("side", ["source", "target"])
def test_a_sqlite_file_that_is_not_a_database(run_cli, tmp_path, side):
    src = sqlite_deployment(tmp_path / "src")
    dst = sqlite_deployment(tmp_path / "dst", create_db=False)
    bad = tmp_path / ("src" if side == "source" else "dst") / "plik.db"
    bad.write_text("this is a text file, not a database\n")
    line = assert_usage_error(run_cli("--config", str(src), "--to", str(dst)), str(bad), "not an SQLite database")
    assert "ConnectionString" in line  # the fix
    assert bad.read_text() == "this is a text file, not a database\n"
    assert list((tmp_path / "dst" / "files").iterdir()) == []
