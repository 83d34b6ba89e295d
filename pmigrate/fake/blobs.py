"""Blob bytes for fake files, written where plikd's file backend looks for them.

Bytes come from one seeded random block: a blob is its file id followed by the
block read from a per-file offset, wrapping around. That is fast to write,
differs from blob to blob, and is the same for the same seed. The MD5 returned
is the true MD5 of what was written, as plikd records it while receiving.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

from pmigrate.ids import check_id

BLOCK = 4 * 1024 * 1024
CHUNK = 1024 * 1024


class FileBlobs:
    """Writes blobs under a file-backend Directory, current or pre-1.3 layout."""

    def __init__(self, *, directory: Path, seed: int) -> None:
        self.directory = directory
        data = random.Random(f"blobs:{seed}").randbytes(BLOCK)
        self.block = memoryview(data + data[:CHUNK])  # a chunk never has to wrap
        self.made_dirs: set[Path] = set()
        self.legacy = 0

    def path(self, *, file_id: str, upload_id: str, legacy: bool) -> Path:
        """{Directory}/{F.id[0:2]}/{F.id}, or plik < 1.3's {Directory}/{U.id[0:2]}/{U.id}/{F.id}."""
        check_id(file_id, what="file id")
        check_id(upload_id, what="upload id")
        if legacy:
            return self.directory / upload_id[:2] / upload_id / file_id
        return self.directory / file_id[:2] / file_id

    def put(self, *, file_id: str, upload_id: str, size: int, legacy: bool, offset: int) -> str:
        path = self.path(file_id=file_id, upload_id=upload_id, legacy=legacy)
        if path.parent not in self.made_dirs:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.made_dirs.add(path.parent)
        self.legacy += legacy
        md5 = hashlib.md5()
        with open(path, "wb") as out:
            for piece in self.chunks(file_id=file_id, size=size, offset=offset):
                md5.update(piece)
                out.write(piece)
        return md5.hexdigest()

    def chunks(self, *, file_id: str, size: int, offset: int):
        """The blob's bytes, in pieces of at most CHUNK."""
        head = file_id.encode()[:size]
        if head:
            yield head
        left = size - len(head)
        pos = offset % BLOCK
        while left > 0:
            n = min(left, CHUNK)
            yield self.block[pos:pos + n]
            left -= n
            pos = (pos + n) % BLOCK


class NoBlobs:
    """--metadata-only: nothing written, an MD5 of the right shape recorded."""

    def __init__(self, *, seed: int | str) -> None:
        self._bits = random.Random(f"md5:{seed}").getrandbits
        self.legacy = 0

    def put(self, *, file_id: str, upload_id: str, size: int, legacy: bool, offset: int) -> str:
        return f"{self._bits(128):032x}"

