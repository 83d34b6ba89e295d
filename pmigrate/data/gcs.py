"""Google Cloud Storage, as plikd's gcs backend lays it out.

Object of file F in upload U: ``{Folder}/{U.id}.{F.id}``, or ``{U.id}.{F.id}``
when Folder is empty (plikd joins them literally, so this does too).
Credentials come from Google's default lookup, as in plikd:
GOOGLE_APPLICATION_CREDENTIALS, the metadata server, gcloud's user
credentials, or STORAGE_EMULATOR_HOST (anonymous, for an emulator).
plikd never creates the bucket, and neither does this backend.

Atomicity: a GCS object becomes visible only when the request that creates
it completes. Small blobs go in one multipart request; larger ones in a
resumable upload, whose data stays invisible until the last chunk finalises
it. A failed upload therefore leaves the final name untouched (the abandoned
session expires on its own after a week).
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO

try:  # SPEC stays readable without the SDK; the registry names what to install before building one
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exc
    from google.cloud import storage
except ImportError:  # pragma: no cover - the gcs extra is not installed
    pass

from pmigrate.data import bwlimit
from pmigrate.data.base import OWNER_MARKER, PROBE_PREFIX, BlobRef, BlobStat, DataBackend, Features, is_marker
from pmigrate.data.cloudio import ChunkReader, Prefixed, Shielded, SourceFailure
from pmigrate.data.sizing import SizedReader
from pmigrate.data.spec import BackendSpec, Option
from pmigrate.errors import BlobNotFound, ConfigError, FatalError, ItemError, Kind, RetryableError, StoreAbsent
from pmigrate.ids import check_id

MIB = 1024 * 1024
GCS_CHUNK_UNIT = 256 * 1024  # resumable chunks must be multiples of this
DEFAULT_CHUNK_SIZE = 16 * MIB  # also the largest blob sent in a single request
READ_CHUNK_SIZE = 8 * MIB


def _chunk_size_problem(size: int) -> str:
    if size <= 0 or size % GCS_CHUNK_UNIT:
        return f"must be a positive multiple of {GCS_CHUNK_UNIT} bytes, not {size!r}"
    return ""


# plikd's server/data/gcs Config; ChunkSize is pmigrate's own: the resumable upload
# chunk, and the size above which a blob is sent resumably (DEFAULT_CHUNK_SIZE when absent).
OPTIONS = (
    Option(name="Bucket", default="", required="name the GCS bucket (plikd does not create it)"),
    Option(name="Folder", default=""),
    Option(name="ChunkSize", type=int, check=_chunk_size_problem),
)


def describe_options(o: Mapping[str, Any]) -> str:
    folder = f"/{o['Folder']}" if o.get("Folder") else ""
    return f"gcs gs://{o.get('Bucket')}{folder}"


def location(o: Mapping[str, Any]) -> tuple:
    return ("gcs", o["Bucket"], str(o["Folder"]).strip("/"))


def _hex_md5(b64: str | None) -> str | None:
    return base64.b64decode(b64).hex() if b64 else None


def translate(exc: BaseException, *, item: str) -> BaseException:
    """A google-cloud exception as pmigrate's error class (for one blob)."""
    if isinstance(exc, SourceFailure):
        return exc.exc
    if isinstance(exc, (BlobNotFound, ItemError, FatalError, ConfigError)):
        return exc
    if isinstance(exc, gexc.NotFound):
        return BlobNotFound(f"gcs object {item} not found", item=item)
    if isinstance(exc, gexc.Unauthorized) or isinstance(exc, auth_exc.RefreshError):
        return FatalError(f"gcs refused the credentials while handling {item}: {exc}")
    if isinstance(
        exc,
        (gexc.TooManyRequests, gexc.InternalServerError, gexc.BadGateway, gexc.ServiceUnavailable, gexc.GatewayTimeout),
    ):
        return RetryableError(f"gcs {item}: {exc}", item=item, kind=Kind.TRANSIENT)
    if isinstance(exc, (ConnectionError, TimeoutError, auth_exc.TransportError)) or type(exc).__module__.startswith(
        ("requests", "urllib3")
    ):
        return RetryableError(f"gcs {item}: {exc}", item=item, kind=Kind.TRANSIENT)
    return ItemError(f"gcs {item}: {exc}", item=item)


class GCSBackend(DataBackend):
    """plikd's gcs backend: one bucket, optional folder, Google default credentials."""

    name = "gcs"
    features = Features(server_side_copy=True, md5_without_read=True, listable=True)

    def __init__(self, options: Mapping[str, Any], *, chunk_size: int | None = None) -> None:
        super().__init__(options)
        opts = self.options  # settled by OPTIONS (pmigrate.data.registry)
        self.bucket_name = str(opts.get("Bucket") or "")
        self.folder = str(opts.get("Folder") or "")
        self.chunk_size = chunk_size if chunk_size is not None else opts.get("ChunkSize", DEFAULT_CHUNK_SIZE)
        self._client_obj: storage.Client | None = None
        self._bucket_obj: storage.Bucket | None = None

    # -- clients -----------------------------------------------------------
    @property
    def _client(self) -> storage.Client:
        if self._client_obj is None:
            try:
                self._client_obj = storage.Client()
                bwlimit.throttle(self._client_obj._http, "request")  # --tpslimit: every request goes through it
            except auth_exc.DefaultCredentialsError as exc:
                raise ConfigError(
                    "no Google credentials for gcs: set GOOGLE_APPLICATION_CREDENTIALS to a service account key file "
                    f"(or STORAGE_EMULATOR_HOST for an emulator) ({exc})"
                ) from None
        return self._client_obj

    @property
    def _bucket(self) -> storage.Bucket:
        if self._bucket_obj is None:
            self._bucket_obj = self._client.bucket(self.bucket_name)
        return self._bucket_obj

    def _endpoint(self) -> str:
        return os.environ.get("STORAGE_EMULATOR_HOST") or os.environ.get("API_ENDPOINT_OVERRIDE") or "storage.googleapis.com"

    def close(self) -> None:
        if self._client_obj is not None:
            self._client_obj.close()
        self._client_obj = None
        self._bucket_obj = None

    # -- locations ---------------------------------------------------------
    def key(self, ref: BlobRef) -> str:
        name = f"{check_id(ref.upload_id, what='upload id')}.{check_id(ref.file_id, what='file id')}"
        return f"{self.folder}/{name}" if self.folder else name

    def describe(self) -> str:
        where = f"gs://{self.bucket_name}/{self.folder + '/' if self.folder else ''}"
        endpoint = self._endpoint()
        return f"gcs {where}" + ("" if endpoint == "storage.googleapis.com" else f" at {endpoint}")

    def same_location(self, other: DataBackend) -> bool:
        return (
            isinstance(other, GCSBackend)
            and other.bucket_name == self.bucket_name
            and other.folder == self.folder
            and other._endpoint() == self._endpoint()
        )

    def check(self, *, create: bool = False) -> None:
        """The bucket must exist and be readable; plikd never creates it, so neither does create=True."""
        try:
            if not self._bucket.exists():
                raise self._absent()
        except ConfigError:
            raise
        except gexc.Forbidden:
            # buckets.get may be denied to an account that can still use objects.
            try:
                next(iter(self._client.list_blobs(self.bucket_name, max_results=1)), None)
            except Exception as exc:  # noqa: BLE001
                raise ConfigError(f"gcs bucket {self.bucket_name!r} is not usable with these credentials: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - anything here means: cannot use the store
            raise ConfigError(f"gcs bucket {self.bucket_name!r} cannot be reached at {self._endpoint()}: {exc}") from None

    def _absent(self) -> StoreAbsent:
        return StoreAbsent(
            f"gcs bucket {self.bucket_name!r} does not exist at {self._endpoint()}: create it first "
            "(plikd does not create it either)"
        )

    def probe_create(self) -> None:
        raise self._absent()

    def probe_write(self) -> str:
        """An empty object uploaded and deleted beside where the ownership record goes."""
        name = f"{PROBE_PREFIX}{os.urandom(6).hex()}"
        blob = self._bucket.blob(f"{self.folder}/{name}" if self.folder else name)
        try:
            blob.upload_from_string(b"")
        except Exception as exc:  # noqa: BLE001
            raise ConfigError(
                f"{self.describe()} refused a write ({type(exc).__name__}: {exc}): "
                "give these credentials storage.objects.create there, or choose another bucket"
            ) from None
        try:
            blob.delete()
        except Exception as exc:  # noqa: BLE001
            return f"could not remove the probe object gs://{self.bucket_name}/{blob.name} ({type(exc).__name__}): delete it by hand"
        return ""

    # -- blobs -------------------------------------------------------------
    def open_read(self, ref: BlobRef) -> BinaryIO:
        """Stream the object with ranged reads, pinned to the generation seen first."""
        key = self.key(ref)
        blob = self._bucket.blob(key)
        try:
            blob.reload()
        except Exception as exc:
            raise translate(exc, item=key) from exc
        if not blob.size:
            return io.BytesIO(b"")  # nothing to fetch (and a range request on it would be refused)
        reader = blob.open("rb", chunk_size=READ_CHUNK_SIZE, if_generation_match=blob.generation)
        left = blob.size

        def read(n: int) -> bytes:
            # Never ask past the end: it costs a request (and emulators mishandle it).
            nonlocal left
            if left <= 0:
                return b""
            data = reader.read(min(n, left))
            if not data:
                raise RetryableError(f"gcs object {key} ended {left} bytes early", item=key, kind=Kind.TRANSIENT)
            left -= len(data)
            return data

        return ChunkReader(read, translate=lambda e: translate(e, item=key), on_close=reader.close)

    def write(self, ref: BlobRef, src: BinaryIO) -> None:
        """One request up to chunk_size bytes, else a resumable upload; visible only once complete."""
        key = self.key(ref)
        content_type = ref.content_type or "application/octet-stream"
        # The object resource (JSON, UTF-8) carries the real type; HTTP headers
        # cannot carry non-ASCII, so the media part gets a neutral one then.
        header_type = content_type if content_type.isascii() else "application/octet-stream"
        src = Shielded(SizedReader.over(src, expected=ref.size, item=key))  # type: ignore[assignment]
        try:
            head = src.read(self.chunk_size + 1)  # filled: short only at the end
            if len(head) <= self.chunk_size:
                blob = self._bucket.blob(key)
                blob.content_type = content_type
                blob.upload_from_string(head, content_type=header_type)
                return
            blob = self._bucket.blob(key, chunk_size=self.chunk_size)
            blob.content_type = content_type
            blob.upload_from_file(Prefixed(head, src), content_type=header_type, size=None)
        except Exception as exc:
            raise translate(exc, item=key) from exc

    def stat(self, ref: BlobRef) -> BlobStat | None:
        """Size, and the MD5 GCS keeps for every non-composite object."""
        key = self.key(ref)
        try:
            blob = self._bucket.get_blob(key)
        except Exception as exc:
            raise translate(exc, item=key) from exc
        if blob is None:
            return None
        md5 = _hex_md5(blob.md5_hash) if not blob.component_count else None
        return BlobStat(size=int(blob.size or 0), md5=md5)

    def delete(self, ref: BlobRef) -> None:
        key = self.key(ref)
        try:
            self._bucket.blob(key).delete()
        except gexc.NotFound:
            return
        except Exception as exc:
            raise translate(exc, item=key) from exc

    def list_blobs(self) -> Iterator[tuple[str, int]]:
        """Every object under Folder/ (the whole bucket when Folder is empty)."""
        prefix = f"{self.folder}/" if self.folder else None
        try:
            for blob in self._client.list_blobs(self.bucket_name, prefix=prefix):
                yield blob.name, int(blob.size or 0)
        except Exception as exc:
            raise FatalError(f"cannot list gcs bucket {self.bucket_name!r}: {translate(exc, item=self.bucket_name)}") from exc

    def _marker_key(self) -> str:
        return f"{self.folder}/{OWNER_MARKER}" if self.folder else OWNER_MARKER

    def read_marker(self) -> bytes | None:
        key = self._marker_key()
        try:
            return self._bucket.blob(key).download_as_bytes()
        except gexc.NotFound:
            return None
        except Exception as exc:
            raise translate(exc, item=key) from exc

    def write_marker(self, data: bytes) -> None:
        key = self._marker_key()
        try:
            self._bucket.blob(key).upload_from_string(data, content_type="application/json")
        except Exception as exc:
            raise FatalError(f"cannot write gs://{self.bucket_name}/{key}: {translate(exc, item=key)}") from exc

    def first_blob(self) -> str | None:
        prefix = f"{self.folder}/" if self.folder else None
        try:
            names = [b.name for b in self._client.list_blobs(self.bucket_name, prefix=prefix, max_results=2)]
        except gexc.NotFound:
            return None
        except Exception as exc:
            raise FatalError(f"cannot list gcs bucket {self.bucket_name!r}: {translate(exc, item=self.bucket_name)}") from exc
        names = [n for n in names if not is_marker(n)]
        return names[0] if names else None

    def copy_from(self, source: DataBackend, ref: BlobRef) -> bool:
        """Rewrite server-side when source is gcs at the same endpoint (same process credentials).

        A rewrite is atomic like an upload. Access denied to the source means:
        stream it instead.
        """
        if not isinstance(source, GCSBackend) or source._endpoint() != self._endpoint():
            return False
        src_key, dst_key = source.key(ref), self.key(ref)
        src_blob = self._client.bucket(source.bucket_name).blob(src_key)
        dst_blob = self._bucket.blob(dst_key)
        if ref.content_type:
            dst_blob.content_type = ref.content_type
        try:
            src_blob.reload()
            if ref.size >= 0 and src_blob.size != ref.size:
                raise ItemError(
                    f"{src_key}: stored size {src_blob.size} but files.size says {ref.size}", item=src_key, kind=Kind.SIZE_MISMATCH
                )
            token, _done, _total = dst_blob.rewrite(src_blob, if_source_generation_match=src_blob.generation)
            while token is not None:
                token, _done, _total = dst_blob.rewrite(
                    src_blob, token=token, if_source_generation_match=src_blob.generation
                )
        except gexc.Forbidden:
            return False
        except gexc.NotFound as exc:
            raise BlobNotFound(f"gcs object {src_key} not found in {source.bucket_name}", item=src_key) from exc
        except Exception as exc:
            raise translate(exc, item=dst_key) from exc
        return True


SPEC = BackendSpec(
    name="gcs",
    factory=GCSBackend,
    options=OPTIONS,
    describe=describe_options,
    location=location,
    needs=("google.cloud.storage",),
    install="pip install 'pmigrate[gcs]'",
)
