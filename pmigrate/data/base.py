"""The small contract every data backend implements, and the features it declares.

The engine talks to backends only through this interface and decides between
code paths (server-side copy, ETag checks) by features, never by type checks.
A backend knows nothing of the journal, the queue or progress.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO, ClassVar

# pmigrate's ownership record at the root of a target store (pmigrate.ownership); never a blob key.
OWNER_MARKER = ".pmigrate-owner.json"
# Names of the probes that prove a target writable before the run (probe_write): pmigrate's own,
# never a blob key (plikd names blobs by 16-character ids), removed as soon as written.
PROBE_PREFIX = ".pmigrate-probe-"


@dataclass(frozen=True, slots=True)
class BlobRef:
    """Where one blob lives in Plik's terms; plain so that it pickles cheaply."""

    file_id: str
    upload_id: str
    size: int = -1
    content_type: str = ""
    md5: str = ""
    backend_details: str = ""  # files.backend_details as stored (JSON text)


@dataclass(frozen=True, slots=True)
class Features:
    stores_data: bool = True  # False for "stream": nothing to copy
    server_side_copy: bool = False  # can copy from another instance of itself without bytes through us
    md5_without_read: bool = False  # stat() can give a trustworthy MD5 (e.g. single-part S3 ETag)
    listable: bool = True  # list_blobs() can enumerate what is stored
    open_uploads: bool = False  # open_uploads() lists uploads begun and never finished (S3 multipart)
    holds_parts: bool = False  # a streamed upload holds whole parts in memory: a budget.PartHolder


@dataclass(frozen=True, slots=True)
class FreeSpace:
    """What a filesystem can still take, as df shows it (what an unprivileged user may use)."""

    path: str  # where it was measured: the target directory, or its nearest existing parent
    bytes: int
    files: int | None  # inodes; None where the filesystem does not count them


@dataclass(frozen=True, slots=True)
class BlobStat:
    size: int
    md5: str | None = None  # hex MD5 known without reading the bytes, if any


@dataclass(frozen=True, slots=True)
class OpenUpload:
    """An upload begun and never completed nor aborted (an S3 multipart upload): invisible, yet billed."""

    key: str
    upload_id: str
    initiated: float = 0.0  # seconds since the epoch, as the store says
    file_id: str | None = None  # the Plik file whose blob the key would be, if it is one


class DataBackend(abc.ABC):
    """One Plik data backend, built from its DataBackendConfig table.

    Instances are built inside each worker process from (name, options):
    clients do not pickle.
    """

    name: ClassVar[str]
    features: ClassVar[Features] = Features()

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.options = dict(options)

    # -- locations ---------------------------------------------------------
    @abc.abstractmethod
    def key(self, ref: BlobRef) -> str:
        """The path or object key of a blob, after validating its ids."""

    def describe(self) -> str:
        """Where this backend stores things, for messages (no secrets)."""
        return self.name

    def same_location(self, other: DataBackend) -> bool:
        """True when both would read and write the very same blobs."""
        return False

    # -- lifecycle ---------------------------------------------------------
    def check(self, *, create: bool = False) -> None:
        """Fail with ConfigError when the store cannot be reached or used.

        With create=True, create the bucket/container/directory where plikd
        itself would.
        """

    def probe_write(self) -> str:
        """Write and remove something of pmigrate's own (PROBE_PREFIX) where blobs would go.

        Called on an existing store before the run writes anything, so that a
        store that would refuse the first blob (read-only, credentials that
        may only read) is found then: ConfigError worded as check(create=True)
        would word it. Returns a warning when the probe could not be removed.
        """
        return ""

    def probe_create(self) -> None:
        """ConfigError when check(create=True) could not create this missing store.

        Nothing can be tried on an object store without creating the bucket,
        so by default this passes; the file backend tries the parent folder.
        """

    def free_space(self) -> FreeSpace | None:
        """Room left where blobs would go; None for a store that reports none (object stores)."""
        return None

    def where(self) -> str:
        """Where blobs go, resolved as the run resolves it (a relative Directory made absolute)."""
        return self.describe()

    def check_source(self, source: DataBackend) -> None:
        """Fail with ConfigError when blobs from source cannot be stored here (e.g. SSE-C keys missing)."""

    def prepare(self) -> None:
        """Build clients ahead of the first blob; a worker calls it as it starts.

        The cost (imports, client set-up) then overlaps the parent's
        enumeration instead of delaying each worker's first blob.
        """

    def discard_partial(self, ref: BlobRef) -> None:
        """Remove what an interrupted write of ref left behind, never visible under its final name.

        Called by the parent when a worker died while writing ref (a crash,
        the OOM killer, kill -9): a worker that is stopped cleans up itself.
        """

    def close(self) -> None:
        """Release clients and connections."""

    # -- blobs -------------------------------------------------------------
    @abc.abstractmethod
    def open_read(self, ref: BlobRef) -> BinaryIO:
        """A stream of the blob's bytes; raises BlobNotFound when absent."""

    @abc.abstractmethod
    def write(self, ref: BlobRef, src: BinaryIO) -> None:
        """Store all of src as the blob of ref, atomically.

        Nothing may be visible under the final name or key until every byte is
        in; on failure nothing is left behind (no partial file, no open
        multipart upload). When ref.size >= 0 and src yields another number
        of bytes, raise ItemError(kind=Kind.SIZE_MISMATCH) and store nothing. Durability
        may wait for sync().
        """

    @abc.abstractmethod
    def stat(self, ref: BlobRef) -> BlobStat | None:
        """Size (and MD5 when known without reading) of a stored blob, or None."""

    def check_read(self, ref: BlobRef) -> BlobStat | None:
        """What a copy would meet reading ref, without reading a byte: as stat(), or ItemError
        when it could not be read. A store whose stat asks what a read asks keeps this default."""
        return self.stat(ref)

    @abc.abstractmethod
    def delete(self, ref: BlobRef) -> None:
        """Remove a blob; absent is not an error."""

    def candidate_keys(self, ref: BlobRef) -> tuple[str, ...]:
        """Every key under which this backend may hold ref's blob, current layout first.

        More than one where plikd still reads an older layout (file before 1.3),
        so that an unowned-object audit does not flag those blobs.
        """
        return (self.key(ref),)

    def sync(self) -> None:
        """Make every blob written so far durable; the engine calls it once per batch.

        A no-op for object stores, whose PUT is durable when it returns. The
        file backend flushes its filesystem here rather than fsyncing each file.
        """

    def free_bytes(self) -> int | None:
        """Bytes this user may still write here, for the message of a full target; None when unknown."""
        return None

    def open_uploads(self) -> list[OpenUpload]:
        """Uploads begun under this backend's keys and never finished (Features.open_uploads)."""
        return []

    def abort_upload(self, upload: OpenUpload) -> None:
        """Abort one of open_uploads(); already gone is not an error."""
        raise NotImplementedError(f"{self.name} has no open uploads to abort")

    def list_blobs(self) -> Iterator[tuple[str, int]]:
        """(key, size) of everything this backend stores, for unowned-object audits."""
        raise NotImplementedError(f"{self.name} cannot list its blobs")

    def copy_from(self, source: DataBackend, ref: BlobRef) -> bool:
        """Copy server-side from source when possible; False means: stream it instead."""
        return False

    # -- pmigrate's ownership record (pmigrate.ownership) --------------------
    def read_marker(self) -> bytes | None:
        """The record OWNER_MARKER at the root of the store, or None when absent (or the store is)."""
        raise NotImplementedError(f"{self.name} keeps no ownership record")

    def write_marker(self, data: bytes) -> None:
        """Store the record OWNER_MARKER at the root of the store, durably and whole."""
        raise NotImplementedError(f"{self.name} keeps no ownership record")

    def first_blob(self) -> str | None:
        """The key of any one stored object but the record, or None when the store holds none."""
        for key, _size in self.list_blobs():
            if not is_marker(key):
                return key
        return None

    def __enter__(self) -> DataBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def is_marker(key: str) -> bool:
    """True for the key of pmigrate's ownership record, in any backend's layout."""
    return key.rsplit("/", 1)[-1] == OWNER_MARKER
