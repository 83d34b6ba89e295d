"""Small source deployments for the blob engine tests: a 0011 SQLite database and its blobs.

The two tables are plikd's own 0011 DDL (as in its sqlite3 dump); blobs are
written where plikd keeps them, by hand, not through the code under test.
"""

from __future__ import annotations

import hashlib
import os
import random
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from pmigrate.data.base import OWNER_MARKER
from tests.servers import S3Server

_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


DDL_0011 = """
CREATE TABLE `uploads` (`id` text,`ttl` integer,`extend_ttl` numeric,`remote_ip` text,`comments` text,`e2ee` text,
`upload_token` text,`user` text,`token` text,`stream` numeric,`one_shot` numeric,`removable` numeric,
`protected_by_password` numeric,`login` text,`password` text,`download_count` integer,`last_downloaded_at` datetime,
`downloaded_bytes` integer,`created_at` datetime,`deleted_at` datetime,`expire_at` datetime,PRIMARY KEY (`id`));
CREATE TABLE `files` (`id` text,`upload_id` text,`name` text,`status` text,`md5` text,`type` text,`size` integer,
`is_text` numeric,`reference` text,`backend_details` text,`download_count` integer,`last_downloaded_at` datetime,
`created_at` datetime,PRIMARY KEY (`id`),CONSTRAINT `fk_uploads_files` FOREIGN KEY (`upload_id`) REFERENCES `uploads`(`id`));
"""


def new_id(rng: random.Random) -> str:
    return "".join(rng.choice(_ALNUM) for _ in range(16))


@dataclass
class Blob:
    file_id: str
    upload_id: str
    data: bytes
    status: str = "uploaded"
    content_type: str = "application/octet-stream"
    size: int | None = None  # files.size when it should lie about the bytes
    backend_details: str = ""
    store: bool = True  # False: the row promises a blob that is not there
    legacy: bool = False  # pre-1.3 file layout

    @property
    def stated_size(self) -> int:
        return len(self.data) if self.size is None else self.size


@dataclass
class Deployment:
    root: Path
    config: Path
    db: Path
    blobs: list[Blob] = field(default_factory=list)

    def with_blob(self) -> list[Blob]:
        return [b for b in self.blobs if b.status in ("uploaded", "removed")]


def make_blobs(n: int, *, seed: int = 1, sizes: list[int] | None = None) -> list[Blob]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        size = sizes[i % len(sizes)] if sizes else rng.randint(0, 70_000)
        out.append(Blob(new_id(rng), new_id(rng), rng.randbytes(size)))
    return out


def create_db(path: Path, blobs: list[Blob]) -> None:
    con = sqlite3.connect(path)
    try:
        con.executescript(DDL_0011)
        uploads = sorted({b.upload_id for b in blobs})
        con.executemany(
            "INSERT INTO uploads (id, created_at) VALUES (?, '2026-01-01 00:00:00+00:00')", [(u,) for u in uploads]
        )
        con.executemany(
            "INSERT INTO files (id, upload_id, name, status, md5, type, size, backend_details, created_at) "
            "VALUES (?, ?, 'name', ?, ?, ?, ?, ?, '2026-01-01 00:00:00+00:00')",
            [
                (b.file_id, b.upload_id, b.status, hashlib.md5(b.data).hexdigest(), b.content_type, b.stated_size, b.backend_details)
                for b in blobs
            ],
        )
        con.commit()
    finally:
        con.close()


def file_toml(directory: Path) -> str:
    return f'DataBackend = "file"\n[DataBackendConfig]\n  Directory = "{directory}"\n'


def meta_toml(db: Path) -> str:
    return f'[MetadataBackendConfig]\n  Driver = "sqlite3"\n  ConnectionString = "{db}"\n'


def file_source(root: Path, blobs: list[Blob]) -> Deployment:
    """A deployment on the file backend under root/src."""
    root.mkdir(parents=True, exist_ok=True)
    files = root / "files"
    for b in blobs:
        if not b.store or b.status not in ("uploaded", "removed"):
            continue
        if b.legacy:
            path = files / b.upload_id[:2] / b.upload_id / b.file_id
        else:
            path = files / b.file_id[:2] / b.file_id
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b.data)
    db = root / "plik.db"
    create_db(db, blobs)
    cfg = root / "plikd.cfg"
    cfg.write_text(file_toml(files) + meta_toml(db))
    return Deployment(root, cfg, db, blobs)


def s3_source(root: Path, blobs: list[Blob], *, server: S3Server, bucket: str, prefix: str = "", extra: str = "") -> Deployment:
    """A deployment on the s3 backend (objects put with boto3), metadata under root."""
    root.mkdir(parents=True, exist_ok=True)
    client = server.client()
    for b in blobs:
        if not b.store or b.status not in ("uploaded", "removed"):
            continue
        key = f"{prefix}/{b.file_id}" if prefix else b.file_id
        client.put_object(Bucket=bucket, Key=key, Body=b.data, ContentType=b.content_type)
    db = root / "plik.db"
    create_db(db, blobs)
    cfg = root / "plikd.cfg"
    cfg.write_text(server.toml(bucket, prefix=prefix, extra=extra) + meta_toml(db))
    return Deployment(root, cfg, db, blobs)


def file_target(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    cfg = root / "target.cfg"
    cfg.write_text(file_toml(root / "files"))
    return cfg


def s3_target(root: Path, *, server: S3Server, bucket: str, prefix: str = "", extra: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    cfg = root / "target.cfg"
    cfg.write_text(server.toml(bucket, prefix=prefix, extra=extra))
    return cfg


def file_target_blobs(directory: Path) -> dict[str, bytes]:
    """file id -> bytes of every blob under a file target, plus '.partial' names as themselves.

    pmigrate's ownership record is not a blob: tests of ownership read it apart.
    """
    out = {}
    for dirpath, _dirs, names in os.walk(directory):
        for n in names:
            if n == OWNER_MARKER and Path(dirpath) == Path(directory):
                continue
            out[n] = (Path(dirpath) / n).read_bytes()
    return out


def s3_target_blobs(server: S3Server, bucket: str, *, prefix: str = "") -> dict[str, bytes]:
    client = server.client()
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/" if prefix else ""):
        for obj in page.get("Contents", []):
            key = obj["Key"]
            name = key[len(prefix) + 1 :] if prefix else key
            if name == OWNER_MARKER:
                continue  # pmigrate's ownership record, not a blob
            out[name] = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    return out
