"""plikd's "stream" backend: file data passes through plikd and never persists.

There is nothing to copy from it, and nothing can be stored into it: the
engine skips every file by the stores_data feature; reading or writing here
anyway is a per-item error of kind "stream".
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from pmigrate.data.base import BlobRef, BlobStat, DataBackend, Features
from pmigrate.data.spec import BackendSpec
from pmigrate.errors import ItemError, Kind
from pmigrate.ids import check_id


class StreamBackend(DataBackend):
    name = "stream"
    features = Features(stores_data=False, server_side_copy=False, md5_without_read=False, listable=True)

    def key(self, ref: BlobRef) -> str:
        return check_id(ref.file_id, what="file id")

    def describe(self) -> str:
        return "stream (stores nothing)"

    def same_location(self, other: DataBackend) -> bool:
        return isinstance(other, StreamBackend)

    def open_read(self, ref: BlobRef) -> BinaryIO:
        raise ItemError(f"file {self.key(ref)}: the stream backend keeps no data to read", item=ref.file_id, kind=Kind.STREAM)

    def write(self, ref: BlobRef, src: BinaryIO) -> None:
        raise ItemError(f"file {self.key(ref)}: the stream backend cannot store data", item=ref.file_id, kind=Kind.STREAM)

    def stat(self, ref: BlobRef) -> BlobStat | None:
        self.key(ref)
        return None

    def delete(self, ref: BlobRef) -> None:
        self.key(ref)

    def list_blobs(self) -> Iterator[tuple[str, int]]:
        return iter(())


SPEC = BackendSpec(name="stream", factory=StreamBackend)  # no options; nothing stored, so no location
