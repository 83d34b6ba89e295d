"""The source's files rows read once for copy, dry run and verify: a NULL files.size means the same to all three.

plikd reads a NULL size as 0 and then serves the blob without a
Content-Length, whatever it holds: the size is unknown, not zero. The copy,
its dry run and verify all take the blob as it is; the real CLI, a real
sqlite3 source from a dump, real blob files.
"""

from __future__ import annotations

import json

import sqlalchemy as sa

from pmigrate import filerows
from tests import blobdeploy as bd
from tests import verifykit as vk
from tests.dumps import load_dump

DUMP = "sqlite3/0011-stats.sqlite3.dump"
N = 6


def _data_problems(path) -> set[tuple[str, str]]:
    doc = json.loads(path.read_text())
    return {(p["kind"], p["item"]) for p in doc["problems"] if p["area"] in ("data", "verify-blobs")}


def test_a_null_size_is_unknown_to_copy_dry_run_and_verify_alike(tmp_path, dumps_dir, run_cli):
    items = vk.blobs(N)
    unsized, resized = items[3], items[4]  # both hold bytes; one row says nothing of its size, one says 1 byte
    (tmp_path / "src-db").mkdir()
    src_db = load_dump(dumps_dir / DUMP, tmp_dir=tmp_path / "src-db")
    vk.add_file_rows(src_db.url, items)
    vk.execute(
        src_db,
        f"UPDATE files SET size = NULL WHERE id = '{unsized.file_id}'",
        f"UPDATE files SET size = 1 WHERE id = '{resized.file_id}'",
    )
    vk.write_file_blobs(tmp_path / "src-files", items)
    src_cfg = vk.file_cfg(tmp_path / "src.cfg", db=src_db, directory=tmp_path / "src-files")
    (tmp_path / "dst").mkdir()
    dst_cfg = tmp_path / "dst" / "target.cfg"
    dst_cfg.write_text(bd.file_toml(tmp_path / "dst" / "files") + bd.meta_toml(tmp_path / "dst" / "plik.db"))
    args = ("--config", str(src_cfg), "--to", str(dst_cfg), "-q")
    wrong = {("size-mismatch", resized.file_id)}

    eng = sa.create_engine(src_db.url)
    try:
        sizes = {r.file_id: r.size for b in filerows.scan(eng, batch_size=2) for r in b.refs}
    finally:
        eng.dispose()
    assert sizes[unsized.file_id] == filerows.UNKNOWN_SIZE and sizes[resized.file_id] == 1

    dry = run_cli(*args, "--dry-run", "--json", str(tmp_path / "dry.json"))
    assert dry.returncode == 1, dry.stdout + dry.stderr
    assert _data_problems(tmp_path / "dry.json") == wrong

    real = run_cli(*args, "--ignore-errors", "--json", str(tmp_path / "real.json"))
    assert real.returncode == 1, real.stdout + real.stderr
    assert _data_problems(tmp_path / "real.json") == wrong
    copied = tmp_path / "dst" / "files" / unsized.file_id[:2] / unsized.file_id
    assert copied.read_bytes() == unsized.data

    # The one blob the run refused, copied by hand as it is: verify holds it to its row, and only it.
    vk.write_file_blobs(tmp_path / "dst" / "files", [resized])
    out = tmp_path / "verify.json"
    proc = run_cli("verify", *args[:4], "--data-only", "--json", str(out), "-q", "--workers", "2")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert _data_problems(out) == wrong
    assert json.loads(out.read_text())["sections"]["verify-blobs"]["ok"] == N - 1
