"""The suite needs nothing outside the project: a fresh clone with no folder beside it runs it.

The clone is of the committed tree (HEAD), as a user's clone would be: a file
the tests read but nobody committed fails here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests import dumps
from tests.servers import unavailable

REPO = Path(__file__).resolve().parent.parent


def test_the_dumps_are_kept_in_the_project(monkeypatch):
    monkeypatch.delenv("PMIGRATE_PLIK_DUMPS", raising=False)
    assert dumps.dumps_dir().resolve().is_relative_to(REPO)
    found = dumps.all_dumps()
    assert {dumps.dump_driver(p) for p in found} == {"sqlite3", "postgres", "mysql"}
    assert len(found) >= 20


def test_pmigrate_plik_dumps_names_another_folder(monkeypatch, tmp_path):
    (tmp_path / "sqlite3").mkdir()
    shutil.copy(dumps.FIXTURE_DUMPS / "sqlite3" / "0011-stats.sqlite3.dump", tmp_path / "sqlite3")
    monkeypatch.setenv("PMIGRATE_PLIK_DUMPS", str(tmp_path))
    assert dumps.all_dumps() == [tmp_path / "sqlite3" / "0011-stats.sqlite3.dump"]


def _clone(dest: Path) -> None:
    if not (REPO / ".git").exists() or shutil.which("git") is None:
        unavailable("not a git checkout: nothing to clone")
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(dest)], check=True, capture_output=True, timeout=120)


def test_a_fresh_clone_alone_runs_the_dump_tests(tmp_path):
    """The sqlite3 dumps need no server: every one of those tests passes in the clone, none skips."""
    clone = tmp_path / "alone" / "pmigrate"  # nothing beside it: no ../shared
    _clone(clone)
    env = {k: v for k, v in os.environ.items() if k != "PMIGRATE_PLIK_DUMPS" and not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = str(clone)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
         "tests/test_dumps.py", "tests/test_metadata_matrix.py::test_matrix_covers_every_level_and_driver",
         "-k", "sqlite3 or covers or there_are"],
        cwd=clone, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "skipped" not in tail, proc.stdout[-3000:]
    assert int(re.search(r"(\d+) passed", tail).group(1)) >= 10, tail
