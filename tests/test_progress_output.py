"""What a run shows while it goes: bars on a real terminal that leave the summary intact, lines in a log."""

from __future__ import annotations

import io
import os
import re
import sys

import pytest

from tests import blobdeploy as bd
from tests.conftest import REPO
from tests.terminal import Screen, run_in_pty

MiB = 1 << 20


def _deployment(tmp_path, run_cli, server, bucket):
    """A fake deployment of every Plik table, 40 files, blobs up to several MiB; an S3 and sqlite3 target."""
    made = run_cli("fakedb", str(tmp_path / "src"), "--files", "40", "--seed", "14", "-q")
    assert made.returncode == 0, made.stderr
    target = bd.s3_target(tmp_path / "dst", server=server, bucket=bucket, extra="PartSize = 5242880\n")
    with target.open("a") as f:
        f.write(bd.meta_toml(tmp_path / "dst" / "plik.db"))
    return tmp_path / "src" / "plikd.cfg", target


def _copied(stdout: str) -> int:
    return int(re.search(r"^  copied (\d+) blobs, ", stdout, re.M).group(1))


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLIKD_")}
    env.update(PYTHONPATH=str(REPO), TERM="xterm")
    return env


@pytest.mark.parametrize("cols", [100, 160])
def test_on_a_terminal_the_summary_starts_at_the_first_column(tmp_path, run_cli, s3_server, s3_bucket, cols):
    src, target = _deployment(tmp_path, run_cli, s3_server, s3_bucket)
    argv = [sys.executable, "-m", "pmigrate", "--config", str(src), "--to", str(target), "--workers", "2"]
    status, raw = run_in_pty(argv, cols=cols, env=_env(), cwd=tmp_path)
    screen = Screen(cols).feed(raw).text()
    assert status == 0, "\n".join(screen)
    stored = bd.s3_target_blobs(s3_server, s3_bucket)

    assert "blobs:" in raw and "bytes:" in raw  # bars were drawn
    # Every line of the summary whole, from the first column: none begun in the last one and wrapped.
    assert "metadata:" in screen and "data:" in screen, "\n".join(screen)
    assert any(row.startswith(f"  copied {len(stored)} blobs, ") for row in screen)
    assert any(row.startswith("migrate: OK in ") for row in screen)
    assert not [row for row in screen if len(row) == cols and not row[: cols - 1].strip()], "\n".join(screen)

    # One unit system: the bars' sizes and speeds are the summary's binary units; counts are whole.
    assert re.search(r"\d (B|KiB|MiB)/\d+\.\d MiB \[", raw) and re.search(r"\d (B|KiB|MiB)/s\]", raw), raw[-2000:]
    assert not re.search(r"\d(k|M)?B/s|\dM/", raw)
    assert re.search(r" \d+/\d+ rows \[", raw) and not re.search(r"\d\.\d+/\d", raw)


@pytest.mark.slow
def test_off_a_terminal_a_progress_line_every_stats_interval(tmp_path, run_cli, s3_server, s3_bucket):
    src, target = _deployment(tmp_path, run_cli, s3_server, s3_bucket)
    cp = run_cli("--config", str(src), "--to", str(target), "--workers", "2", "--stats", "0.001")
    assert cp.returncode == 0, cp.stderr
    assert "\r" not in cp.stderr  # no bar redrawn into a log
    lines = cp.stderr.splitlines()
    data = [ln for ln in lines if ln.startswith("pmigrate: data: ")]
    assert data, cp.stderr
    size = r"\d+(\.\d)? (B|KiB|MiB)"
    pattern = rf"pmigrate: data: \d+/{_copied(cp.stdout)} blobs, {size}/{size} \(\d+%\), {size}/s, \d+s elapsed(, \d+s left)?"
    assert all(re.fullmatch(pattern, ln) for ln in data), data
    rows = [ln for ln in lines if ln.startswith("pmigrate: metadata: ")]  # a table that took longer than 1 ms
    assert set(lines) == set(data) | set(rows), cp.stderr  # nothing else on stderr

    quiet = run_cli("--config", str(src), "--to", str(target), "--workers", "2", "--stats", "0", "--restart")
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr


def test_off_a_terminal_the_metadata_copy_counts_rows_in_whole_numbers(tmp_path, run_cli):
    made = run_cli("fakedb", str(tmp_path / "src"), "--files", "5000", "--metadata-only", "-q")
    assert made.returncode == 0, made.stderr
    target = tmp_path / "target.cfg"
    target.write_text(bd.meta_toml(tmp_path / "dst.db"))
    cp = run_cli("--config", str(tmp_path / "src" / "plikd.cfg"), "--to", str(target), "--metadata-only",
                 "--batch-size", "500", "--stats", "0.001")  # fmt: skip
    assert cp.returncode == 0, cp.stderr
    files = [ln for ln in cp.stderr.splitlines() if ln.startswith("pmigrate: metadata: files: ")]
    assert len(files) >= 2, cp.stderr
    pattern = r"pmigrate: metadata: files: \d+/5000 rows \(\d+%\), \d+ rows/s, \d+s elapsed(, \d+s left)?"
    assert all(re.fullmatch(pattern, ln) for ln in files), files


def test_the_progress_line_speaks_in_whole_counts_and_binary_units():
    from pmigrate.progress import Progress

    out = io.StringIO()
    p = Progress("data", every=60, out=out, terminal=False)
    blobs = p.meter("blobs", total=509, unit="blob")
    nbytes = p.meter("bytes", total=150_155_673, unit="B")
    blobs.update(120)
    nbytes.update(35_651_584)
    assert out.getvalue() == ""  # not before `every` seconds
    p.started -= 10
    assert p.line(now=p.started + 10) == "pmigrate: data: 120/509 blobs, 34.0 MiB/143.2 MiB (23%), 3.4 MiB/s, 10s elapsed, 32s left"
    p.last -= 60
    p.tick()
    assert out.getvalue().startswith("pmigrate: data: 120/509 blobs, 34.0 MiB/143.2 MiB (23%), ")
    p.close()
