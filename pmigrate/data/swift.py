"""OpenStack Swift, as plikd's swift backend lays it out.

Object of file F in upload U: ``{U.id}.{F.id}`` in ``Container`` (default
``plik``), which plikd creates when missing, and so does check(create=True).
The connection keys are those of plikd's Go client (ncw/swift Connection),
mapped onto python-swiftclient: v1 (tempauth and the like) works as is; v2 and
v3 Keystone need python-keystoneclient, as swiftclient does.

Atomicity: Swift makes an object visible only when its PUT completes; a PUT
whose body breaks off stores nothing. A blob larger than SegmentSize
(pmigrate's own key, default 5 GiB, Swift's single-object limit) is stored
as a static large object: segments in ``<Container>_segments``, then a
manifest under the final name, so the blob appears only with its manifest.
A failed large upload deletes the segments it wrote; those of a writer killed
outright are deleted by discard_partial(), which the engine calls before the
blob is tried again.
"""

from __future__ import annotations

import importlib.util
import json
import re
import uuid
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO

try:  # SPEC stays readable without the SDK; the registry names what to install before building one
    import swiftclient
    from swiftclient.exceptions import ClientException
except ImportError:  # pragma: no cover - the swift extra is not installed
    pass

from pmigrate.data import bwlimit
from pmigrate.data.base import OWNER_MARKER, PROBE_PREFIX, BlobRef, BlobStat, DataBackend, Features, is_marker
from pmigrate.data.cloudio import ChunkReader, Limited, Prefixed, Shielded, SourceFailure
from pmigrate.data.sizing import SizedReader
from pmigrate.data.spec import BackendSpec, Option
from pmigrate.errors import BlobNotFound, ConfigError, FatalError, ItemError, Kind, RetryableError, StoreAbsent
from pmigrate.ids import check_id

GIB = 1024 * 1024 * 1024
MAX_SINGLE_OBJECT = 5 * GIB  # Swift's default max_file_size
IO_CHUNK = 1024 * 1024
DEFAULT_RETRIES = 3  # ncw/swift's default
DEFAULT_TIMEOUT_NS = 60 * 10**9  # ncw/swift's data channel timeout
# What follows "{key}/" in the name of a segment _write_large writes: one upload's id, the segment's index.
SEGMENT_NAME = re.compile(r"[0-9a-f]{32}/[0-9]{8}")
DEFAULT_CONTAINER = "plik"


def _segment_size_problem(size: int) -> str:
    return "" if 0 < size <= MAX_SINGLE_OBJECT else f"must be 1 to {MAX_SINGLE_OBJECT} bytes, not {size!r}"


def _auth_problem(o: Mapping[str, Any]) -> str:
    if not o.get("AuthUrl") and not (o.get("StorageUrl") and o.get("AuthToken")):
        return "AuthUrl is missing: set the Swift authentication URL"
    return ""


# plikd's server/data/swift Config: the fields of ncw/swift's Connection. SegmentSize
# is pmigrate's own: blobs above it are stored as static large objects (MAX_SINGLE_OBJECT when absent).
OPTIONS = (
    Option(name="Container", default=DEFAULT_CONTAINER, check=lambda v: "" if v else "is empty: name the Swift container"),
    *(Option(name=name) for name in (
        "AuthUrl", "UserName", "UserId", "Domain", "DomainId", "ApplicationCredentialId", "ApplicationCredentialName",
        "UserAgent", "Region", "Tenant", "TenantId", "EndpointType", "TenantDomain", "TenantDomainId", "TrustId",
        "StorageUrl",
    )),
    *(Option(name=name, secret=True) for name in ("ApiKey", "ApplicationCredentialSecret", "AuthToken")),
    *(Option(name=name, type=int) for name in ("Retries", "ConnectTimeout", "Timeout", "AuthVersion")),
    Option(name="Internal", type=bool),
    Option(name="SegmentSize", type=int, check=_segment_size_problem),
)  # fmt: skip


def describe_options(o: Mapping[str, Any]) -> str:
    return f"swift {o.get('AuthUrl')} container {o.get('Container')}"


def location(o: Mapping[str, Any]) -> tuple:
    return ("swift", str(o.get("AuthUrl", "")).rstrip("/"), o["Container"])


def translate(exc: BaseException, *, item: str) -> BaseException:
    """A swiftclient or transport exception as pmigrate's error class (for one blob)."""
    if isinstance(exc, SourceFailure):
        return exc.exc
    if isinstance(exc, (ItemError, FatalError, ConfigError)):
        return exc
    if isinstance(exc, ClientException):
        status = exc.http_status
        if status == 404:
            return BlobNotFound(f"swift object {item} not found", item=item)
        if status == 401:
            return FatalError(f"swift refused the credentials while handling {item}: {exc.msg}")
        if status is None or status >= 500 or status in (408, 429, 499):
            return RetryableError(f"swift {item}: {exc}", item=item, kind=Kind.TRANSIENT)
        return ItemError(f"swift {item}: {exc}", item=item)
    if isinstance(exc, (ConnectionError, TimeoutError, OSError)) or type(exc).__module__.startswith(("requests", "urllib3")):
        return RetryableError(f"swift {item}: {exc}", item=item, kind=Kind.TRANSIENT)
    return ItemError(f"swift {item}: {exc}", item=item)


def _auth_version(options: Mapping[str, Any]) -> int | None:
    """AuthVersion, or guessed from AuthUrl as ncw/swift does; None when pre-authenticated only."""
    version = options.get("AuthVersion") or 0
    url = str(options.get("AuthUrl") or "")
    if not url:
        return None
    if not version:
        for v in (3, 2, 1):
            if f"v{v}" in url:
                version = v
                break
    if version not in (1, 2, 3):
        raise ConfigError(
            f"swift AuthVersion cannot be told from AuthUrl {url!r}: set AuthVersion to 1, 2 or 3"
        )
    return version


def connection_kwargs(options: Mapping[str, Any]) -> dict[str, Any]:
    """swiftclient.Connection arguments for plikd's (ncw/swift) connection settings."""
    o = options
    for unsupported in ("TrustId",):
        if o.get(unsupported):
            raise ConfigError(f"swift {unsupported} is not supported by python-swiftclient: authenticate without it")
    kw: dict[str, Any] = {
        "retries": int(o.get("Retries") or DEFAULT_RETRIES),
        "timeout": int(o.get("Timeout") or DEFAULT_TIMEOUT_NS) / 1e9,  # a Go time.Duration, in ns
        "starting_backoff": 1,
        "max_backoff": 16,
    }
    if o.get("StorageUrl") and o.get("AuthToken"):
        kw["preauthurl"], kw["preauthtoken"] = o["StorageUrl"], o["AuthToken"]
    version = _auth_version(o)
    if version is None:
        problem = _auth_problem(o)
        if problem:
            raise ConfigError(f"swift {problem}")
        return kw
    kw.update(authurl=o["AuthUrl"], user=o.get("UserName") or None, key=o.get("ApiKey") or None)
    kw["auth_version"] = {1: "1", 2: "2.0", 3: "3"}[version]
    if version == 1:
        if o.get("Internal"):
            raise ConfigError("swift Internal with v1 auth is not supported: set StorageUrl to the internal URL instead")
        return kw
    if importlib.util.find_spec("keystoneclient") is None:
        raise ConfigError(f"swift auth v{version} needs python-keystoneclient: pip install python-keystoneclient")
    os_options: dict[str, Any] = {"region_name": o.get("Region") or None}
    endpoint = o.get("EndpointType") or ("internal" if o.get("Internal") else "public")
    os_options["endpoint_type"] = endpoint
    if version == 2:
        os_options.update(tenant_name=o.get("Tenant") or None, tenant_id=o.get("TenantId") or None)
    else:
        os_options.update(
            user_id=o.get("UserId") or None,
            user_domain_name=o.get("Domain") or None,
            user_domain_id=o.get("DomainId") or None,
            project_name=o.get("Tenant") or None,
            project_id=o.get("TenantId") or None,
        )
        if o.get("Tenant") and not o.get("TenantId"):
            # ncw/swift scopes a named project to TenantDomain, else the user's domain, else "Default".
            if o.get("TenantDomain") or o.get("TenantDomainId"):
                os_options.update(
                    project_domain_name=o.get("TenantDomain") or None, project_domain_id=o.get("TenantDomainId") or None
                )
            elif o.get("Domain") or o.get("DomainId"):
                os_options.update(project_domain_name=o.get("Domain") or None, project_domain_id=o.get("DomainId") or None)
            else:
                os_options["project_domain_name"] = "Default"
        if o.get("ApplicationCredentialSecret"):
            if not o.get("ApplicationCredentialId"):
                raise ConfigError("swift ApplicationCredentialName is not supported by python-swiftclient: use ApplicationCredentialId")
            os_options.update(
                auth_type="v3applicationcredential",
                application_credential_id=o["ApplicationCredentialId"],
                application_credential_secret=o["ApplicationCredentialSecret"],
            )
    kw["os_options"] = {k: v for k, v in os_options.items() if v is not None}
    return kw


class SwiftBackend(DataBackend):
    """plikd's swift backend: one container, objects named {upload id}.{file id}."""

    name = "swift"
    features = Features(server_side_copy=True, md5_without_read=True, listable=True)

    def __init__(self, options: Mapping[str, Any], *, segment_size: int | None = None) -> None:
        super().__init__(options)
        o = self.options  # settled by OPTIONS (pmigrate.data.registry)
        self.container = str(o.get("Container") or DEFAULT_CONTAINER)
        self.segment_container = f"{self.container}_segments"
        self.segment_size = segment_size if segment_size is not None else o.get("SegmentSize", MAX_SINGLE_OBJECT)
        self._kwargs = connection_kwargs(o)
        self._conn_obj: swiftclient.Connection | None = None
        self._segments_seen: bool | None = None

    # -- connection --------------------------------------------------------
    def _conn(self) -> swiftclient.Connection:
        if self._conn_obj is None:
            self._conn_obj = swiftclient.Connection(**self._kwargs)
            bwlimit.throttle(self._conn_obj, "_retry")  # --tpslimit: every request goes through it
        return self._conn_obj

    def storage_url(self) -> str:
        """The account URL this backend's credentials lead to (authenticates if needed)."""
        conn = self._conn()
        if not conn.url or not conn.token:
            conn.get_auth()
        return str(conn.url).rstrip("/")

    def close(self) -> None:
        if self._conn_obj is not None:
            self._conn_obj.close()
        self._conn_obj = None

    # -- locations ---------------------------------------------------------
    def key(self, ref: BlobRef) -> str:
        return f"{check_id(ref.upload_id, what='upload id')}.{check_id(ref.file_id, what='file id')}"

    def describe(self) -> str:
        where = self.options.get("AuthUrl") or self.options.get("StorageUrl")
        user = self.options.get("UserName")
        return f"swift container {self.container} at {where}" + (f" as {user}" if user else "")

    def _identity(self) -> tuple:
        o = self.options
        return (
            str(o.get("AuthUrl") or "").rstrip("/"),
            str(o.get("StorageUrl") or "").rstrip("/"),
            o.get("Tenant") or "",
            o.get("TenantId") or "",
            # with v1 auth the account follows from the user name
            o.get("UserName") if _auth_version(o) == 1 else "",
        )

    def same_location(self, other: DataBackend) -> bool:
        return isinstance(other, SwiftBackend) and other.container == self.container and other._identity() == self._identity()

    def check(self, *, create: bool = False) -> None:
        """Authenticate and find the container; create it when asked, as plikd does on first use."""
        where = self.describe()
        conn = swiftclient.Connection(**{**self._kwargs, "retries": 1, "starting_backoff": 0.5})
        try:
            try:
                conn.head_container(self.container)
            except ClientException as exc:
                if exc.http_status != 404:
                    raise
                if not create:
                    raise StoreAbsent(f"{where}: the container does not exist (plikd creates it on first use)") from None
                conn.put_container(self.container)
        except ConfigError:
            raise
        except ClientException as exc:
            if exc.http_status in (401, 403):
                raise ConfigError(f"{where}: Swift refused the credentials ({exc.http_status}): check UserName and ApiKey") from None
            raise ConfigError(f"{where}: Swift answered {exc.http_status or ''} {exc.msg}: check AuthUrl and Container") from None
        except Exception as exc:  # noqa: BLE001 - anything else: the store cannot be reached
            raise ConfigError(f"{where}: cannot reach Swift ({exc}): check AuthUrl") from None
        finally:
            conn.close()

    def probe_write(self) -> str:
        """An empty object put and deleted beside the ownership record."""
        name = f"{PROBE_PREFIX}{uuid.uuid4().hex[:12]}"
        try:
            self._conn().put_object(self.container, name, contents=b"")
        except Exception as exc:  # noqa: BLE001
            status = getattr(exc, "http_status", None) or type(exc).__name__
            raise ConfigError(
                f"{self.describe()}: Swift refused a write ({status}): give this user write access to the container, "
                "or choose another one"
            ) from None
        try:
            self._conn().delete_object(self.container, name)
        except Exception as exc:  # noqa: BLE001
            status = getattr(exc, "http_status", None) or type(exc).__name__
            return f"could not remove the probe object {name} from swift container {self.container} ({status}): delete it by hand"
        return ""

    # -- blobs -------------------------------------------------------------
    def open_read(self, ref: BlobRef) -> BinaryIO:
        """A streamed GET (swiftclient resumes it with a Range request if the connection drops)."""
        key = self.key(ref)
        try:
            _headers, body = self._conn().get_object(self.container, key, resp_chunk_size=IO_CHUNK)
        except Exception as exc:
            raise translate(exc, item=key) from exc
        return ChunkReader(body.read, translate=lambda e: translate(e, item=key), on_close=body.close)

    def write(self, ref: BlobRef, src: BinaryIO) -> None:
        """One chunked PUT, or segments and a manifest above segment_size; visible only once complete."""
        key = self.key(ref)
        content_type = ref.content_type or "application/octet-stream"
        checked = SizedReader.over(src, expected=ref.size, item=key)
        try:
            if ref.size > self.segment_size:
                self._write_large(key, checked, content_type)
                return
            # A large object replaced by a plain one would strand its segments.
            previous = self._segments_of(key) if self._may_hold_segments() else []
            self._conn().put_object(
                self.container, key, contents=Shielded(checked), chunk_size=IO_CHUNK, content_type=content_type
            )
        except Exception as exc:
            raise translate(exc, item=key) from exc
        self._delete_segments(self._own_segments(previous))

    def _may_hold_segments(self) -> bool:
        """Whether the segments container exists (asked once): without it, no large object does."""
        if self._segments_seen is None:
            try:
                self._conn().head_container(self.segment_container)
                self._segments_seen = True
            except ClientException as exc:
                if exc.http_status != 404:
                    raise
                self._segments_seen = False
        return self._segments_seen

    def _own_segments(self, paths: list[str], *, keep: frozenset[str] | set[str] = frozenset()) -> list[str]:
        """Object names in the segments container among manifest paths, minus those to keep."""
        prefix = f"/{self.segment_container}/"
        return [p[len(prefix) :] for p in paths if p.startswith(prefix) and p not in keep]

    def _write_large(self, key: str, src: SizedReader, content_type: str) -> None:
        """A static large object; segments of a failed upload are deleted again."""
        conn = self._conn()
        conn.put_container(self.segment_container)
        self._segments_seen = True
        previous = self._segments_of(key)
        prefix = f"{key}/{uuid.uuid4().hex}/"
        stream = Prefixed(b"", src)  # type: ignore[arg-type]
        attempted: list[str] = []
        manifest: list[dict[str, Any]] = []
        try:
            while True:
                name = f"{prefix}{len(attempted):08d}"
                part = Limited(stream, self.segment_size)
                attempted.append(name)
                etag = conn.put_object(
                    self.segment_container, name, contents=Shielded(part), chunk_size=IO_CHUNK,
                    content_type="application/octet-stream",
                )  # fmt: skip
                manifest.append({"path": f"/{self.segment_container}/{name}", "etag": etag, "size_bytes": part.count})
                if part.count < self.segment_size or stream.peek_eof():
                    break
            conn.put_object(
                self.container, key, contents=json.dumps(manifest), content_type=content_type,
                query_string="multipart-manifest=put",
            )  # fmt: skip
        except BaseException:
            self._delete_segments(attempted)
            raise
        self._delete_segments(self._own_segments(previous, keep={m["path"] for m in manifest}))

    def discard_partial(self, ref: BlobRef) -> None:
        """Delete the segments of ref's interrupted large uploads, which no manifest refers to.

        Only names this backend gives segments (``{key}/{upload id}/{index}``)
        are candidates, and the segments of the manifest now stored under the
        key are kept: a blob being rewritten keeps its previous version whole.
        """
        key = self.key(ref)
        try:
            _h, objects = self._conn().get_container(self.segment_container, prefix=f"{key}/", full_listing=True)
            live = set(self._own_segments(self._segments_of(key)))
        except ClientException as exc:
            if exc.http_status == 404:
                return  # no segments container: no large upload ever began
            raise translate(exc, item=key) from exc
        except Exception as exc:
            raise translate(exc, item=key) from exc
        names = [o["name"] for o in objects]
        self._delete_segments([n for n in names if SEGMENT_NAME.fullmatch(n[len(key) + 1 :]) and n not in live])

    def _segments_of(self, key: str) -> list[str]:
        """Segment paths of the static large object now stored under key (none if plain or absent)."""
        conn = self._conn()
        try:
            headers = conn.head_object(self.container, key)
            if headers.get("x-static-large-object", "").lower() != "true":
                return []
            _h, body = conn.get_object(self.container, key, query_string="multipart-manifest=get")
        except ClientException as exc:
            if exc.http_status == 404:
                return []
            raise
        return ["/" + str(seg.get("name", "")).lstrip("/") for seg in json.loads(body)]

    def _delete_segments(self, names: list[str]) -> None:
        for name in names:
            try:
                self._conn().delete_object(self.segment_container, name)
            except Exception:  # noqa: BLE001 - best effort; an absent segment is fine
                pass

    def stat(self, ref: BlobRef) -> BlobStat | None:
        """Size, and the ETag as MD5 unless the object is a large-object manifest."""
        key = self.key(ref)
        try:
            h = self._conn().head_object(self.container, key)
        except ClientException as exc:
            if exc.http_status == 404:
                return None
            raise translate(exc, item=key) from exc
        except Exception as exc:
            raise translate(exc, item=key) from exc
        manifest = h.get("x-static-large-object", "").lower() == "true" or "x-object-manifest" in h
        etag = h.get("etag", "").strip('"')
        return BlobStat(size=int(h.get("content-length", 0)), md5=None if manifest or len(etag) != 32 else etag)

    def delete(self, ref: BlobRef) -> None:
        """Delete the object, and its segments when it is a static large object."""
        key = self.key(ref)
        try:
            h = self._conn().head_object(self.container, key)
            slo = h.get("x-static-large-object", "").lower() == "true"
            self._conn().delete_object(self.container, key, query_string="multipart-manifest=delete" if slo else None)
        except ClientException as exc:
            if exc.http_status == 404:
                return
            raise translate(exc, item=key) from exc
        except Exception as exc:
            raise translate(exc, item=key) from exc

    def list_blobs(self) -> Iterator[tuple[str, int]]:
        """Every object in Container (segments live apart, in <Container>_segments)."""
        try:
            _h, objects = self._conn().get_container(self.container, full_listing=True)
        except ClientException as exc:
            if exc.http_status == 404:
                return
            raise FatalError(f"cannot list swift container {self.container}: {exc}") from exc
        except Exception as exc:
            raise FatalError(f"cannot list swift container {self.container}: {exc}") from exc
        for obj in objects:
            yield obj["name"], int(obj.get("bytes", 0))

    def read_marker(self) -> bytes | None:
        try:
            _h, body = self._conn().get_object(self.container, OWNER_MARKER)
        except ClientException as exc:
            if exc.http_status == 404:
                return None
            raise translate(exc, item=OWNER_MARKER) from exc
        return body

    def write_marker(self, data: bytes) -> None:
        try:
            self._conn().put_object(self.container, OWNER_MARKER, contents=data, content_type="application/json")
        except Exception as exc:
            raise FatalError(f"cannot write {OWNER_MARKER} in swift container {self.container}: {exc}") from exc

    def first_blob(self) -> str | None:
        try:
            _h, objects = self._conn().get_container(self.container, limit=2)
        except ClientException as exc:
            if exc.http_status == 404:
                return None
            raise FatalError(f"cannot list swift container {self.container}: {exc}") from exc
        names = [o["name"] for o in objects if not is_marker(o["name"])]
        return names[0] if names else None

    def segments(self) -> list[str]:
        """Every object in the segments container."""
        try:
            _h, objects = self._conn().get_container(self.segment_container, full_listing=True)
        except ClientException as exc:
            if exc.http_status == 404:
                return []
            raise
        return [o["name"] for o in objects]

    def orphan_segments(self) -> list[str]:
        """Segments no stored manifest refers to: what failed large uploads would leave."""
        names = self.segments()
        live: set[str] = set()
        for key in {n.split("/", 1)[0] for n in names}:
            live.update(self._own_segments(self._segments_of(key)))
        return [n for n in names if n not in live]

    def copy_from(self, source: DataBackend, ref: BlobRef) -> bool:
        """COPY within the same account; large-object manifests are streamed instead."""
        if not isinstance(source, SwiftBackend):
            return False
        try:
            if source.storage_url() != self.storage_url():
                return False
        except Exception:  # noqa: BLE001 - cannot tell: stream it
            return False
        src_key, dst_key = source.key(ref), self.key(ref)
        conn = self._conn()
        try:
            h = conn.head_object(source.container, src_key)
        except ClientException as exc:
            if exc.http_status == 404:
                raise BlobNotFound(f"swift object {src_key} not found in {source.container}", item=src_key) from exc
            if exc.http_status == 403:
                return False
            raise translate(exc, item=src_key) from exc
        if h.get("x-static-large-object", "").lower() == "true" or "x-object-manifest" in h:
            return False
        size = int(h.get("content-length", -1))
        if ref.size >= 0 and size != ref.size:
            raise ItemError(f"{src_key}: stored size {size} but files.size says {ref.size}", item=src_key, kind=Kind.SIZE_MISMATCH)
        headers = {"Content-Type": ref.content_type} if ref.content_type else None
        try:
            conn.copy_object(source.container, src_key, destination=f"/{self.container}/{dst_key}", headers=headers)
        except ClientException as exc:
            if exc.http_status == 403:
                return False
            raise translate(exc, item=dst_key) from exc
        except Exception as exc:
            raise translate(exc, item=dst_key) from exc
        return True


SPEC = BackendSpec(
    name="swift",
    factory=SwiftBackend,
    options=OPTIONS,
    describe=describe_options,
    location=location,
    check=_auth_problem,
    needs=("swiftclient",),
    install="pip install 'pmigrate[swift]'",
)
