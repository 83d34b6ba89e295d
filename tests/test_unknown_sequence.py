"""A table plikd's schema does not know, copied into PostgreSQL, keeps handing out new keys.

The rows arrive with their keys; the serial column's sequence must be moved
past them, or the application's next INSERT collides with a copied row.
"""

from __future__ import annotations

import sqlalchemy as sa

from tests import dumps as dumps_mod
from tests import verifykit as vk


def test_unknown_serial_table_into_postgres_takes_new_rows(tmp_path, dumps_dir, run_cli, pg_db):
    src = dumps_mod.load_dump(dumps_dir / "sqlite3" / "0011-stats.sqlite3.dump", tmp_dir=tmp_path)
    vk.execute(
        src,
        'CREATE TABLE "Audit Log" (`id` integer PRIMARY KEY, `what` text)',
        "INSERT INTO \"Audit Log\" (id, what) VALUES (1, 'a'), (2, 'b'), (40, 'c')",
    )
    (tmp_path / "a").mkdir()
    src_cfg = vk.file_cfg(tmp_path / "src.cfg", db=src, directory=tmp_path / "a")
    dst_cfg = vk.file_cfg(tmp_path / "dst.cfg", db=pg_db, directory=tmp_path / "b")
    for _ in range(2):  # a fresh target, then a re-run into the same one
        proc = run_cli("--config", str(src_cfg), "--to", str(dst_cfg), "--metadata-only", "-q")
        assert proc.returncode == 0, proc.stdout + proc.stderr

    eng = sa.create_engine(pg_db.url)
    try:
        with eng.begin() as conn:
            new = conn.exec_driver_sql("INSERT INTO \"Audit Log\" (what) VALUES ('after') RETURNING id").scalar()
            assert new == 41
            ids = conn.exec_driver_sql('SELECT id FROM "Audit Log" ORDER BY id').scalars().all()
    finally:
        eng.dispose()
    assert ids == [1, 2, 40, 41]
