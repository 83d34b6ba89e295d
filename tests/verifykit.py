"""Deployments to verify: a Plik database from a real dump plus file rows with blobs.

The same seed gives the same rows and bytes, so a source and a faithful target
can be built apart and then damaged on purpose.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

UPLOAD = "UPLOAD1XXXXXXXXX"  # an upload every 0011 dump holds


@dataclass(frozen=True)
class Blob:
    file_id: str
    data: bytes
    md5: str


def blobs(n: int, *, seed: int = 7, max_size: int = 200_000) -> list[Blob]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        size = 0 if i == 0 else rng.randint(1, max_size)
        data = rng.randbytes(size)
        out.append(Blob(file_id=f"VF{seed:02d}{i:012d}", data=data, md5=hashlib.md5(data).hexdigest()))
    return out


def add_file_rows(url: str, items: list[Blob], *, md5: bool = True) -> None:
    """Insert one uploaded file row per blob (and a deleted one without a blob)."""
    eng = sa.create_engine(url)
    try:
        with eng.begin() as conn:
            q = eng.dialect.identifier_preparer.quote
            cols = ["id", "upload_id", "name", "status", "md5", "type", "size", "backend_details", "reference"]
            stmt = sa.text(f"INSERT INTO files ({', '.join(q(c) for c in cols)}) VALUES ({', '.join(':' + c for c in cols)})")
            rows = [
                dict(id=b.file_id, upload_id=UPLOAD, name=f"name-{b.file_id}.bin", status="uploaded", md5=b.md5 if md5 else "",
                     type="application/octet-stream", size=len(b.data), backend_details="", reference="")
                for b in items
            ]
            rows.append(dict(id="VFDELETEDXXXXXXX", upload_id=UPLOAD, name="gone", status="deleted", md5="", type="", size=10,
                             backend_details="", reference=""))
            conn.execute(stmt, rows)
            # The dump's own uploaded file has no blob to go with it: out of the way.
            conn.execute(sa.text(f"UPDATE files SET {q('status')} = 'deleted' WHERE id = 'FILE1XXXXXXXXXXX'"))
    finally:
        eng.dispose()


def write_file_blobs(directory: Path, items: list[Blob]) -> None:
    for b in items:
        path = directory / b.file_id[:2] / b.file_id
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b.data)


def write_s3_blobs(client, bucket: str, items: list[Blob], *, prefix: str = "") -> None:
    for b in items:
        client.put_object(Bucket=bucket, Key=f"{prefix.strip('/')}/{b.file_id}" if prefix else b.file_id, Body=b.data)


def file_cfg(path: Path, *, db, directory: Path) -> Path:
    path.write_text(f'DataBackend = "file"\n[DataBackendConfig]\n  Directory = "{directory}"\n' + db.toml(), encoding="utf-8")
    return path


def execute(db, *stmts: str) -> None:
    """Run SQL on a test database in one transaction: damage a target, add a row."""
    eng = sa.create_engine(db.url)
    try:
        with eng.begin() as conn:
            for stmt in stmts:
                conn.exec_driver_sql(stmt)
    finally:
        eng.dispose()


def s3_cfg(path: Path, *, db, s3, bucket: str, prefix: str = "") -> Path:
    path.write_text(s3.toml(bucket, prefix=prefix) + db.toml(), encoding="utf-8")
    return path


def copy_tree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst)


def flip_byte(path: Path, offset: int = 0) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


def truncate(path: Path, size: int) -> None:
    os.truncate(path, size)
