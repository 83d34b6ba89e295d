"""plikd's "s3" data backend, through boto3 and s3transfer.

Object key `{Prefix}/{F.id}` (or `{F.id}`), content type from files.type,
options and defaults as plikd's server/data/s3. A blob below PartSize goes
in one plain PutObject; a larger one through s3transfer as a multipart
upload of PartSize parts, aborted by s3transfer on any failure so no part is left
behind. Sources are non-seekable streams (the engine hashes them), which
s3transfer reads into memory a part at a time, uploading parts in parallel
threads while the next one is read. How many parts may be in memory is a
token budget (pmigrate.data.budget): a token is taken before a part is read
and given back when its upload ends. In a worker pool the tokens are shared,
at most 2 x workers and fewer when the run's memory limit says so, so a
worker alone on a big blob keeps several parts in flight; a backend used
alone holds at most OWN_PARTS parts.

SSE-C: plikd keeps a 32-character key per file in files.backend_details
(JSON {"SSEKey": "..."}) and sends its bytes as the customer key (AES256).
Blobs are read with that key and written with it again, since the metadata
copy keeps backend_details. Files without one going to an SSE-C target get
a key made by pmigrate (data/ssekeys.py), in their refs and in their rows.
SSE-S3: the store encrypts; only the requests that create an object ask for it.

Faults: every request is retried by one policy (pmigrate.data.retry, hooked
into botocore's request loop by data/s3_retry.py), with botocore's own
retries off. Timeouts are short, so that a stalled request is cut and tried
again instead of holding an upload slot: an answer may keep us waiting
READ_TIMEOUT seconds, or longer for large parts (a store takes in a part at
SLOWEST bytes a second, at worst). The requests a worker waits on alone are
hedged (data/s3_hedge.py), and a GetObject body cut short is read on from
where it stopped (a ranged GET of the same ETag), not from the start.
"""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import threading
import urllib.request
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO

from pmigrate import redact
from pmigrate.data import bwlimit, s3_retry
from pmigrate.data.base import OWNER_MARKER, PROBE_PREFIX, BlobRef, BlobStat, DataBackend, Features, OpenUpload, is_marker
from pmigrate.data.budget import PartBudget
from pmigrate.data.retry import ATTEMPTS, CAPABILITY, RETRIED, RETRY_FOR, RETRY_FOR_KEY, RetryPolicy
from pmigrate.data.s3_hedge import Hedger
from pmigrate.data.sizing import SizedReader, size_error
from pmigrate.data.spec import BackendSpec, Option, defaults
from pmigrate.errors import (
    DENIED,
    GONE,
    UNREACHABLE,
    BlobNotFound,
    Cancelled,
    ConfigError,
    FatalError,
    ItemError,
    Kind,
    RetriesExhausted,
    RetryableError,
    StoreAbsent,
    StoreError,
    Unsupported,
)
from pmigrate.ids import ID_PATTERN, check_id

MiB = 1 << 20
DEFAULT_PART_SIZE = 16 * MiB
MIN_PART_SIZE = 5 * MiB
OWN_PARTS = 2  # parts in memory for a backend outside a worker pool: one uploading, one being read
CONCURRENCY = 4  # threads per worker for parts and server-side part copies
BUDGETED = 1 * MiB  # a plain PutObject body this large takes a budget token too
RESUME_CHUNK = 64 << 10  # bytes read from a GetObject body at once: at most this much is read again after a cut
SSE_MODES = ("", "S3", "SSE-C")
CONNECT_TIMEOUT = 5.0  # seconds to open a connection
READ_TIMEOUT = 2.0  # seconds an answer may keep us waiting, at least; then the request is tried again
SLOWEST = 4 * MiB  # bytes a second a store takes in a part, at worst: what sets a large part's longer wait

_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
_AUTH = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken", "AuthorizationHeaderMalformed"}
_GONE_UPLOAD = {"CompleteMultipartUpload", "UploadPart", "UploadPartCopy"}  # operations that meet NoSuchUpload


def _endpoint_problem(endpoint: str) -> str:
    if "://" in endpoint or "/" in endpoint:
        return f"{endpoint!r} must be host[:port] without scheme or path: use UseSSL for https"
    return ""


def _part_size_problem(size: int) -> str:
    if size < MIN_PART_SIZE:
        return f"{size} is under 5 MiB, which S3 refuses: set at least {MIN_PART_SIZE}"
    return ""


def _sse_problem(sse: str) -> str:
    if sse == "KMS":
        return "'KMS' is not implemented by plikd: use '', 'S3' or 'SSE-C'"
    if sse not in SSE_MODES:
        return f"{sse!r} is not valid (an unknown SSE mode): use '', 'S3' or 'SSE-C'"
    return ""


_REFUSED = " (plikd refuses to start without it)"
# plikd's server/data/s3 Config, its defaults (NewConfig) and its Validate.
OPTIONS = (
    Option(name="Endpoint", required="set the S3 host:port" + _REFUSED, check=_endpoint_problem),
    Option(name="AccessKeyID", required="set the access key id" + _REFUSED),
    Option(name="SecretAccessKey", required="set the secret key" + _REFUSED, secret=True),
    Option(name="Bucket", default="plik", required="set the bucket name" + _REFUSED),
    Option(name="Location", default="us-east-1", required="set the region" + _REFUSED),
    Option(name="Prefix", default=""),
    Option(name="PartSize", type=int, default=DEFAULT_PART_SIZE, check=_part_size_problem),
    Option(name="UseSSL", type=bool, default=False),
    Option(name="SSE", default="", check=_sse_problem),
)


def describe_options(o: Mapping[str, Any]) -> str:
    scheme = "https" if o.get("UseSSL") else "http"
    prefix = f"/{o['Prefix'].strip('/')}" if o.get("Prefix") else ""
    sse = f" (SSE {o['SSE']})" if o.get("SSE") else ""
    return f"s3 {scheme}://{o.get('Endpoint')}/{o.get('Bucket')}{prefix}{sse}"


def location(o: Mapping[str, Any]) -> tuple:
    return ("s3", str(o["Endpoint"]).lower().rstrip("/"), o["Bucket"], str(o["Prefix"]).strip("/"))


class S3Backend(DataBackend):
    name = "s3"
    attempts = ATTEMPTS  # tries of a request while the store answers others (pmigrate.data.retry)
    retry_for = RETRY_FOR  # seconds a request is tried again while the store answers nothing
    features = Features(stores_data=True, server_side_copy=True, md5_without_read=True, listable=True, open_uploads=True, holds_parts=True)

    def __init__(self, options: Mapping[str, Any]) -> None:
        super().__init__({**defaults(OPTIONS), **options})
        o = self.options  # checked by OPTIONS when opened by name (pmigrate.data.registry)
        self.endpoint: str = o["Endpoint"]
        self.access_key: str = o["AccessKeyID"]
        self.secret_key: str = o["SecretAccessKey"]
        self.bucket: str = o["Bucket"]
        self.location: str = o["Location"]
        self.prefix: str = o["Prefix"]
        self.use_ssl: bool = o["UseSSL"]
        self.sse: str = o["SSE"]
        self.part_size: int = o["PartSize"]
        try:
            self.retry_for = float(self.options.pop(RETRY_FOR_KEY, type(self).retry_for))
        except (TypeError, ValueError):
            raise ConfigError(f"s3 backend: {RETRY_FOR_KEY} must be a number of seconds") from None
        self.part_bytes = self.part_size
        self._lock = threading.Lock()
        self._budget = PartBudget(own=OWN_PARTS)
        self._budget_hooked = False  # s3transfer gives tokens back as parts finish
        self._client: Any = None
        self._manager: Any = None
        self._hedger: Hedger | None = None
        self._pid = 0
        self._retry = self._policy()

    # -- clients, built in the process that uses them ----------------------------
    @property
    def client(self) -> Any:
        if self._client is None or self._pid != os.getpid():
            with self._lock:
                if self._client is None or self._pid != os.getpid():
                    self._build()
        return self._client

    @property
    def manager(self) -> Any:
        self.client  # noqa: B018 - the client property builds the manager too
        return self._manager

    @property
    def read_timeout(self) -> float:
        """Seconds an answer may keep us waiting: enough for a store taking in a whole part at SLOWEST bytes a second."""
        return max(READ_TIMEOUT, self.part_size / SLOWEST)

    def _policy(self) -> RetryPolicy:
        return RetryPolicy(attempts=self.attempts, retry_for=self.retry_for, probe=self._probe, stopped=lambda: self._budget.stopping())

    def _call(self, method: str, **kwargs: Any) -> Any:
        """A request a blob's copy waits on alone, hedged (data/s3_hedge.py): a stalled answer does not idle the worker."""
        client = self.client  # built on first use, with the hedger
        if self._hedger is None:
            return getattr(client, method)(**kwargs)
        return self._hedger.call(method, **kwargs)

    def _probe(self) -> None:
        """One HeadBucket, not tried again: any answer from the store tells the policy that it is up."""
        self.client.head_bucket(Bucket=self.bucket)

    def _build(self) -> None:
        from botocore.config import Config
        from s3transfer.manager import TransferConfig, TransferManager

        from pmigrate.data import s3_session

        config = Config(
            region_name=self.location,
            max_pool_connections=CONCURRENCY + 4,
            retries={"mode": "standard", "total_max_attempts": 1},  # pmigrate's policy retries, below (s3_retry)
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=self.read_timeout,
            s3={"addressing_style": "auto" if self.endpoint.endswith("amazonaws.com") else "path"},
            # the checksums botocore adds by default are refused by many S3 servers plikd runs against
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        scheme = "https" if self.use_ssl else "http"
        self._client = s3_session.client(
            endpoint_url=f"{scheme}://{self.endpoint}",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=config,
        )
        self._retry = self._policy()  # this process's: what another one saw of the store says nothing here
        s3_retry.install(self._client, self._retry)
        if bwlimit.tps_limited():  # every HTTP request, retries included, pays --tpslimit
            self._client.meta.events.register("before-send.s3", bwlimit.request)
        self._hedger = Hedger(self._client, longest=self.read_timeout)
        tconfig = TransferConfig(
            multipart_threshold=self.part_size,
            multipart_chunksize=self.part_size,
            max_request_concurrency=CONCURRENCY,
            max_in_memory_upload_chunks=1,  # in force only if the budget cannot be hooked in below
            max_request_queue_size=CONCURRENCY * 2,
            max_submission_queue_size=CONCURRENCY * 2,
        )
        self._manager = TransferManager(self._client, tconfig)
        self._budget_hooked = _hook_budget(self._manager, self._budget)
        self._pid = os.getpid()

    def use_part_budget(self, budget: PartBudget) -> None:
        self._budget = budget  # its stopping() also ends the retry policy's waits
        if self._manager is not None:
            self._budget_hooked = _hook_budget(self._manager, budget)

    def prepare(self) -> None:
        self.client  # noqa: B018 - the property builds the client in this process

    def close(self) -> None:
        if self._manager is not None and self._pid == os.getpid():
            self._manager.shutdown()
        if self._hedger is not None and self._pid == os.getpid():
            self._hedger.close()
        self._hedger = None
        self._manager = None
        self._client = None

    # -- locations ---------------------------------------------------------------
    def key(self, ref: BlobRef) -> str:
        fid = check_id(ref.file_id, what="file id")
        return f"{self.prefix}/{fid}" if self.prefix else fid  # plikd joins with "/" verbatim

    def describe(self) -> str:
        where = f"{self.bucket}/{self.prefix}" if self.prefix else self.bucket
        return f"s3://{where} at {self.endpoint}"

    def same_location(self, other: DataBackend) -> bool:
        return (
            isinstance(other, S3Backend)
            and other.endpoint.lower() == self.endpoint.lower()
            and other.bucket == self.bucket
            and other.prefix == self.prefix
        )

    # -- lifecycle ---------------------------------------------------------------
    def check(self, *, create: bool = False) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        self._listening()
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as exc:
            code = _code(exc)
            if code in _AUTH or code == "403":
                raise ConfigError(
                    f"s3 backend: {self.describe()} refused the credentials ({code}): check AccessKeyID and SecretAccessKey"
                ) from None
            if code not in ("404", "NoSuchBucket", "NotFound"):
                raise ConfigError(f"s3 backend: cannot use bucket {self.bucket!r} at {self.endpoint}: {_message(exc)}") from None
        except BotoCoreError as exc:
            raise ConfigError(
                f"s3 backend: cannot reach {self.endpoint} ({redact.redact(str(exc))}): check Endpoint and UseSSL"
            ) from None
        if not create:
            raise StoreAbsent(f"s3 backend: bucket {self.bucket!r} does not exist at {self.endpoint}")
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        if self.location != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.location}
        try:
            self.client.create_bucket(**kwargs)
        except ClientError as exc:
            if _code(exc) not in ("BucketAlreadyOwnedByYou",):
                raise ConfigError(f"s3 backend: cannot create bucket {self.bucket!r}: {_message(exc)}") from None

    def probe_write(self) -> str:
        """An empty object put and deleted beside where the ownership record goes."""
        key = self._root_key(f"{PROBE_PREFIX}{os.urandom(6).hex()}")
        extra = {"ServerSideEncryption": "AES256"} if self.sse == "S3" else {}
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=b"", **extra)
        except Exception as exc:  # noqa: BLE001
            raise ConfigError(
                f"s3 backend: {self.describe()} refused a write ({_code(exc) or _message(exc)}): "
                "give these credentials s3:PutObject there, or choose another bucket"
            ) from None
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except Exception as exc:  # noqa: BLE001
            return f"could not remove the probe object {self.bucket}/{key} ({_code(exc) or _message(exc)}): delete it by hand"
        return ""

    def _listening(self) -> None:
        """ConfigError at once when nothing listens at Endpoint: before the first answer, a wrong Endpoint, not an outage.

        The requests themselves would be tried again for up to retry_for
        seconds, as in an outage. Skipped when an HTTP proxy stands between.
        """
        if urllib.request.getproxies():
            return
        host, _, port = self.endpoint.rpartition(":")
        if not host or not port.isdigit():
            host, port = self.endpoint, "443" if self.use_ssl else "80"
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT).close()
        except OSError as exc:
            raise ConfigError(f"s3 backend: cannot reach {self.endpoint} ({exc.strerror or exc}): check Endpoint and UseSSL") from None

    # -- blobs -------------------------------------------------------------------
    def _read_args(self, ref: BlobRef, *, prefix: str = "") -> dict[str, str]:
        """SSE arguments of a request that reads or appends to an object: the SSE-C key, if any.

        GetObject, HeadObject and UploadPart take no ServerSideEncryption (AWS
        documents it on the requests that create an object only, and botocore
        refuses it elsewhere); with SSE-C every request names the key. With
        prefix="CopySource", the arguments naming the source of a copy.
        """
        if self.sse != "SSE-C":
            return {}
        key = sse_key(ref)
        return {f"{prefix}SSECustomerAlgorithm": "AES256", f"{prefix}SSECustomerKey": key}

    def _write_args(self, ref: BlobRef) -> dict[str, str]:
        """SSE arguments of a request that creates an object: PutObject, CreateMultipartUpload, CopyObject."""
        if self.sse == "S3":
            return {"ServerSideEncryption": "AES256"}
        return self._read_args(ref)

    def open_read(self, ref: BlobRef) -> BinaryIO:
        key = self.key(ref)
        try:
            resp = self._call("get_object", Bucket=self.bucket, Key=key, **self._read_args(ref))
        except Exception as exc:  # noqa: BLE001 - classified below
            raise self._error(exc, ref=ref, what=f"read {self.bucket}/{key}") from None
        size = int(resp.get("ContentLength") or 0)
        body = _BodyReader(self, resp, ref=ref, key=key)
        return io.BufferedReader(body, min(MiB, max(size + 1, 8192)))

    def _error(self, exc: Exception, *, ref: BlobRef, what: str, write: bool = False) -> Exception:
        """_classify, knowing whether this process's policy took the store for unreachable."""
        down = self._retry.down
        err = _classify(exc, ref=ref, what=what, write=write)
        if isinstance(err, RetriesExhausted) and down is not None:
            return StoreError(UNREACHABLE, f"S3 endpoint {self.endpoint} unreachable for {down:.0f} s ({err})")
        return err

    def stat(self, ref: BlobRef) -> BlobStat | None:
        key = self.key(ref)
        try:
            head = self._call("head_object", Bucket=self.bucket, Key=key, **self._read_args(ref))
        except Exception as exc:  # noqa: BLE001
            err = self._error(exc, ref=ref, what=f"stat {self.bucket}/{key}")
            if isinstance(err, BlobNotFound):
                return None
            raise err from None
        return BlobStat(size=int(head["ContentLength"]), md5=None if self.sse == "SSE-C" else _etag_md5(head))

    def write(self, ref: BlobRef, src: BinaryIO) -> None:
        key = self.key(ref)
        extra = self._write_args(ref)
        if ref.content_type:
            extra["ContentType"] = _header(ref.content_type)
        reader = SizedReader.over(src, expected=ref.size, item=ref.file_id)
        if 0 <= ref.size < self.part_size:
            if ref.size < BUDGETED:
                self._put(ref, key, reader, extra)
                return
            if not self._budget.acquire():
                raise Cancelled("stopping")
            try:
                self._put(ref, key, reader, extra)
            finally:
                self._budget.release()
            return
        subscribers = [_KnownSize(ref.size)] if ref.size >= 0 else None
        manager = self.manager  # built on first use, which also hooks the budget in
        body: Any = _PartGate(reader, self._budget) if self._budget_hooked else reader
        try:
            future = manager.upload(body, self.bucket, key, extra_args=extra, subscribers=subscribers)
            future.result()
        except Exception as exc:  # noqa: BLE001
            raise self._error(exc, ref=ref, what=f"write {self.bucket}/{key}", write=True) from None
        finally:
            if self._budget_hooked:
                self._budget.release_all()  # parts read but never sent, when the upload failed

    def _put(self, ref: BlobRef, key: str, reader: SizedReader, extra: dict[str, str]) -> None:
        """A blob below PartSize in one PutObject, without s3transfer's futures and threads (~5 ms CPU each).

        One below BUDGETED is hedged (_call): two copies of a larger body would hold memory the budget does not count.
        """
        body = reader.read(ref.size + 1)  # one byte past files.size: a longer source fails here
        reader.read(1)  # and a shorter one here, at its end; nothing was sent yet
        try:
            if len(body) < BUDGETED:
                self._call("put_object", Bucket=self.bucket, Key=key, Body=body, **extra)
            else:
                self.client.put_object(Bucket=self.bucket, Key=key, Body=body, **extra)
        except Exception as exc:  # noqa: BLE001
            raise self._error(exc, ref=ref, what=f"write {self.bucket}/{key}", write=True) from None

    def copy_from(self, source: DataBackend, ref: BlobRef) -> bool:
        """CopyObject / UploadPartCopy when both sides share endpoint and credentials and SSE-C keys stay the same.

        Raises Unsupported when the store refuses the copy itself as not
        implemented or not allowed (some servers do not copy SSE-C objects):
        the caller streams the bytes instead.
        """
        if not (
            isinstance(source, S3Backend)
            and source.endpoint.lower() == self.endpoint.lower()
            and source.use_ssl == self.use_ssl
            and source.access_key == self.access_key
            and (source.sse == "SSE-C") == (self.sse == "SSE-C")
            and not source.same_location(self)
        ):
            return False
        src_key, key = source.key(ref), self.key(ref)
        try:
            head = self._call("head_object", Bucket=source.bucket, Key=src_key, **source._read_args(ref))
        except Exception as exc:  # noqa: BLE001
            err = self._error(exc, ref=ref, what=f"stat {source.bucket}/{src_key}")
            if isinstance(err, StoreError):
                err.side = "source"
            raise err from None
        size = int(head["ContentLength"])
        if ref.size >= 0 and size != ref.size:
            raise size_error(item=ref.file_id, expected=ref.size, got=size)
        extra = self._write_args(ref)
        extra.update(source._read_args(ref, prefix="CopySource"))
        extra["MetadataDirective"] = "REPLACE"
        if ref.content_type:
            extra["ContentType"] = _header(ref.content_type)
        try:
            future = self.manager.copy(
                {"Bucket": source.bucket, "Key": src_key},
                self.bucket,
                key,
                extra_args=extra,
                subscribers=[_KnownSize(size)],
            )
            future.result()
        except Exception as exc:  # noqa: BLE001
            refused = _refused_copy(exc)
            if refused:
                raise Unsupported(f"the store refuses server-side copies ({refused})", item=ref.file_id) from None
            raise self._error(exc, ref=ref, what=f"copy {source.bucket}/{src_key} to {self.bucket}/{key}", write=True) from None
        return True

    def discard_partial(self, ref: BlobRef) -> None:
        """Abort the multipart uploads left open for ref's key: S3 bills their parts until then."""
        key = self.key(ref)
        try:
            resp = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=key)
            for upload in resp.get("Uploads", ()):
                if upload["Key"] == key:
                    self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload["UploadId"])
        except Exception as exc:  # noqa: BLE001
            err = self._error(exc, ref=ref, what=f"abort the open uploads of {self.bucket}/{key}")
            if not isinstance(err, BlobNotFound):
                raise err from None

    def delete(self, ref: BlobRef) -> None:
        key = self.key(ref)
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except Exception as exc:  # noqa: BLE001
            err = self._error(exc, ref=ref, what=f"delete {self.bucket}/{key}")
            if not isinstance(err, BlobNotFound):
                raise err from None

    def list_blobs(self) -> Iterator[tuple[str, int]]:
        paginator = self.client.get_paginator("list_objects_v2")
        prefix = f"{self.prefix}/" if self.prefix else ""
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for obj in page.get("Contents", ()):
                    yield obj["Key"], int(obj["Size"])
        except Exception as exc:  # noqa: BLE001
            raise FatalError(f"cannot list {self.describe()}: {_message(exc)}") from None

    def _marker_key(self) -> str:
        return self._root_key(OWNER_MARKER)

    def _root_key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def read_marker(self) -> bytes | None:
        key = self._marker_key()
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except Exception as exc:  # noqa: BLE001
            if _code(exc) in _NOT_FOUND or _code(exc) == "NoSuchBucket":
                return None
            raise FatalError(f"cannot read {self.bucket}/{key}: {_message(exc)}") from None

    def write_marker(self, data: bytes) -> None:
        key = self._marker_key()
        extra = {"ServerSideEncryption": "AES256"} if self.options.get("SSE") == "S3" else {}
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType="application/json", **extra)
        except Exception as exc:  # noqa: BLE001
            raise FatalError(f"cannot write {self.bucket}/{key}: {_message(exc)}") from None

    def first_blob(self) -> str | None:
        prefix = f"{self.prefix}/" if self.prefix else ""
        try:
            resp = self.client.list_objects_v2(Bucket=self.bucket, Prefix=prefix, MaxKeys=2)
        except Exception as exc:  # noqa: BLE001
            if _code(exc) == "NoSuchBucket":
                return None
            raise FatalError(f"cannot list {self.describe()}: {_message(exc)}") from None
        keys = [o["Key"] for o in resp.get("Contents", ()) if not is_marker(o["Key"])]
        return keys[0] if keys else None

    def open_multipart_uploads(self) -> list[str]:
        """Keys of multipart uploads begun and never completed or aborted under this backend's prefix."""
        return [u.key for u in self.open_uploads()]

    def open_uploads(self) -> list[OpenUpload]:
        """Every multipart upload open under the prefix, with the file id its key is the blob key of, if any."""
        prefix = f"{self.prefix}/" if self.prefix else ""
        out = []
        paginator = self.client.get_paginator("list_multipart_uploads")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for u in page.get("Uploads", ()):
                key = u["Key"]
                rest = key[len(prefix) :]
                fid = rest if ID_PATTERN.fullmatch(rest) else None
                initiated = u.get("Initiated")
                when = initiated.timestamp() if hasattr(initiated, "timestamp") else 0.0
                out.append(OpenUpload(key=key, upload_id=u["UploadId"], initiated=when, file_id=fid))
        return out

    def abort_upload(self, upload: OpenUpload) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=upload.key, UploadId=upload.upload_id)
        except ClientError as exc:
            if _code(exc) not in ("NoSuchUpload", "404"):
                raise


def sse_key(ref: BlobRef) -> str:
    """The file's SSE-C key from backend_details, as plikd stores it."""
    try:
        details = json.loads(ref.backend_details) if ref.backend_details else {}
    except ValueError:
        raise ItemError(f"file {ref.file_id}: backend_details is not JSON", item=ref.file_id, kind=Kind.SSE_KEY) from None
    key = details.get("SSEKey") if isinstance(details, dict) else None
    if not key or not isinstance(key, str):
        raise ItemError(f"file {ref.file_id}: no SSEKey in backend_details for an SSE-C store", item=ref.file_id, kind=Kind.SSE_KEY)
    if len(key.encode()) != 32:
        raise ItemError(f"file {ref.file_id}: SSEKey is not 32 bytes long", item=ref.file_id, kind=Kind.SSE_KEY)
    return key


def _header(value: str) -> str:
    """files.type as an ASCII header value: non-ASCII text as an RFC 2047 encoded word.

    HTTP headers carry ASCII reliably and SigV4 signs them; plikd serves the
    content type from the metadata, not from the object, so this encoding
    loses nothing and content_type_of() gives the original back.
    """
    value = " ".join(value.splitlines())
    try:
        value.encode("ascii")
        return value
    except UnicodeEncodeError:
        return "=?utf-8?b?" + base64.b64encode(value.encode("utf-8")).decode("ascii") + "?="


def content_type_of(head: Mapping[str, Any]) -> str:
    """The content type from a HeadObject answer, decoded back to files.type (see _header)."""
    value = str(head.get("ContentType", ""))
    if value.startswith("=?utf-8?b?") and value.endswith("?="):
        try:
            return base64.b64decode(value[10:-2], validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return value
    return value


def _etag_md5(head: Mapping[str, Any]) -> str | None:
    """The ETag is the MD5 only for a single-part object not encrypted with SSE-C or KMS."""
    etag = str(head.get("ETag", "")).strip('"')
    if not etag or "-" in etag or len(etag) != 32:
        return None
    if head.get("SSECustomerAlgorithm") or head.get("ServerSideEncryption") == "aws:kms":
        return None
    return etag.lower()


def _hook_budget(manager: Any, budget: PartBudget) -> bool:
    """Make s3transfer give a budget token back as each in-memory part finishes uploading.

    s3transfer bounds in-memory parts with its own per-manager semaphore; ours
    replaces it, so that the bound holds across all the workers. False (and
    s3transfer's own bound of one part) if its internals are not as expected.
    """
    try:
        from s3transfer.futures import IN_MEMORY_UPLOAD_TAG

        semaphores = manager._request_executor._tag_semaphores
    except (ImportError, AttributeError):
        return False
    if not isinstance(semaphores, dict) or IN_MEMORY_UPLOAD_TAG not in semaphores:
        return False
    semaphores[IN_MEMORY_UPLOAD_TAG] = _TokenReturn(budget)
    return True


class _TokenReturn:
    """s3transfer's TaskSemaphore interface: the token was taken when the part was read (_PartGate)."""

    def __init__(self, budget: PartBudget) -> None:
        self._budget = budget

    def acquire(self, tag: Any, blocking: bool = True) -> None:
        return None

    def release(self, tag: Any, acquire_token: Any) -> None:
        self._budget.release()


class _PartGate:
    """The upload's source: takes a budget token before s3transfer reads each part into memory."""

    def __init__(self, src: SizedReader, budget: PartBudget) -> None:
        self._src = src
        self._budget = budget

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def read(self, n: int = -1) -> bytes:
        if not self._budget.acquire():
            raise Cancelled("stopping")
        try:
            data = self._src.read(n)
        except BaseException:
            self._budget.release()
            raise
        if not data:
            self._budget.release()  # the end of the blob: nothing to upload
        return data


class _KnownSize:
    """s3transfer subscriber giving the size up front: no HeadObject, and the right single/multipart choice."""

    def __init__(self, size: int) -> None:
        self.size = size

    def on_queued(self, future: Any, **kwargs: Any) -> None:
        future.meta.provide_transfer_size(self.size)

    def on_progress(self, **kwargs: Any) -> None:
        pass

    def on_done(self, **kwargs: Any) -> None:
        pass


class _BodyReader(io.RawIOBase):
    """A GetObject body as a raw stream that reads on from where a cut connection stopped it.

    A failure mid-body is one more failed request to the policy: after its
    wait, a ranged GetObject of the same ETag (an object replaced meanwhile
    fails with 412, an ItemError) resumes at the first byte not yet read.
    """

    def __init__(self, backend: S3Backend, resp: Mapping[str, Any], *, ref: BlobRef, key: str) -> None:
        self._backend = backend
        self._body = resp["Body"]
        self._etag = str(resp.get("ETag") or "")
        self._ref = ref
        self._key = key
        self._offset = 0
        self._tries = 0  # failures since the last byte read
        self._since = 0.0

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        while True:
            try:
                # At most RESUME_CHUNK at once: a read that fails loses what it had received
                data = self._body.read(min(len(buf), RESUME_CHUNK))
                break
            except Exception as exc:  # noqa: BLE001 - classified by the policy, or below
                self._resume(exc)
        n = len(data)
        buf[:n] = data
        self._offset += n
        if n:
            self._tries = 0
        return n

    def _resume(self, exc: Exception) -> None:
        b = self._backend
        what = f"read {b.bucket}/{self._key}"
        policy = b._retry
        self._tries += 1
        if self._tries == 1:
            self._since = policy.now()
        delay = policy.after(s3_retry.error_kind(exc) or "", tries=self._tries, since=self._since)
        if delay is None or not policy.wait(delay):
            raise b._error(exc, ref=self._ref, what=what) from None
        try:
            self._body.close()
        except Exception:  # noqa: BLE001 - a broken connection may not close cleanly
            pass
        extra = b._read_args(self._ref)
        if self._etag:
            extra["IfMatch"] = self._etag
        try:
            resp = b.client.get_object(Bucket=b.bucket, Key=self._key, Range=f"bytes={self._offset}-", **extra)
        except Exception as err:  # noqa: BLE001
            raise b._error(err, ref=self._ref, what=what) from None
        self._body = resp["Body"]

    def close(self) -> None:
        try:
            self._body.close()
        finally:
            super().close()


def _code(exc: Exception) -> str:
    resp = getattr(exc, "response", None) or {}
    code = str(resp.get("Error", {}).get("Code", ""))
    return code or str(resp.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))


def _status(exc: Exception) -> int:
    resp = getattr(exc, "response", None) or {}
    return int(resp.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def _refused_copy(exc: Exception) -> str:
    """Status and code (e.g. "501 NotImplemented") when the store refused a copy as such, else "".

    501 is what a server answers for a request it does not implement (Ceph
    RGW for an SSE-C copy, for one); 403 AccessDenied and 400 InvalidRequest
    are how others refuse a copy they do not allow. The HEAD of the source
    succeeded just before, so these are about copying, not about the object.
    """
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        return ""
    status, code = _status(exc), _code(exc)
    if status == 501 or code == "NotImplemented" or (status, code) in ((403, "AccessDenied"), (400, "InvalidRequest")):
        return f"{status} {code}"
    return ""


def _message(exc: Exception) -> str:
    return redact.redact(str(exc))


def _classify(exc: Exception, *, ref: BlobRef, what: str, write: bool = False) -> Exception:
    """One of pmigrate's errors for a failure of boto3/s3transfer (or our own, passed through).

    A request that failed for a transient reason reaches here only once the
    retry policy gave up on it: RetriesExhausted, not tried again above. A
    403 on a write is the bucket's policy, the same for every blob: it stops
    the run. On a read it stays one blob's error, as S3 answers 403 for a
    missing key to whom may not list the bucket.
    """
    from botocore.exceptions import ClientError

    if isinstance(exc, (ItemError, FatalError, ConfigError, Cancelled)):
        return exc
    item = ref.file_id
    if isinstance(exc, ClientError):
        code = _code(exc)
        status = _status(exc)
        if code in _NOT_FOUND:
            return BlobNotFound(f"{what}: no such object", item=item)
        if code == "NoSuchBucket":
            return StoreError(GONE, f"{what}: the bucket does not exist (NoSuchBucket)")
        if code in _AUTH:
            return StoreError(DENIED, f"{what}: credentials refused ({code}): check AccessKeyID and SecretAccessKey")
        if code == "NoSuchUpload" and getattr(exc, "operation_name", "") in _GONE_UPLOAD:
            # The upload ended under us: most likely our own completion, whose answer
            # was lost and whose retry found it done. Only writing it again is sure.
            return RetryableError(f"{what}: the multipart upload ended before it was completed: {_message(exc)}", item=item)
        kind = s3_retry.kind(status, code)
        if kind == CAPABILITY:
            return Unsupported(f"{what}: the store does not implement this request ({status} {code})", item=item)
        if write and (code == "AccessDenied" or status == 403):
            return StoreError(DENIED, f"{what}: access denied ({status} {code})")
        if kind in RETRIED:
            return RetriesExhausted(f"{what}: {_message(exc)}", item=item)
        return ItemError(f"{what}: {_message(exc)}", item=item)
    if s3_retry.error_kind(exc) in RETRIED:
        return RetriesExhausted(f"{what}: {type(exc).__name__}: {_message(exc)}", item=item)
    return ItemError(f"{what}: {type(exc).__name__}: {_message(exc)}", item=item)


SPEC = BackendSpec(
    name="s3",
    factory=S3Backend,
    options=OPTIONS,
    describe=describe_options,
    location=location,
    install="pip install boto3",
    needs=("boto3", "s3transfer"),
    preload=("pmigrate.data.s3_session", "botocore.config", "s3transfer.manager"),
)
