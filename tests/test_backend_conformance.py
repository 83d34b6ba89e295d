"""The conformance suite on every backend built here, plus what only one backend does."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import http.server
import io
import json
import os
import stat
import threading

import pytest

from pmigrate.data.registry import open_backend
from pmigrate.errors import BlobNotFound, ConfigError, ItemError, RetriesExhausted, StoreError
from tests.conformance import BackendConformance, MiB, SharedStore, in_use, make_ref, payload, read_all


def _file_residue(backend) -> list[str]:
    """Temporary files (hidden names) anywhere under Directory."""
    found = []
    for root, _dirs, names in os.walk(backend.directory):
        found += [os.path.join(root, n) for n in names if n.startswith(".")]
    return found


class TestFileBackend(BackendConformance):
    @pytest.fixture
    def backend(self, tmp_path):
        yield from in_use(open_backend("file", {"Directory": str(tmp_path / "files")}))

    @pytest.fixture
    def residue(self):
        return _file_residue

    @pytest.fixture
    def peer(self, tmp_path):
        yield from in_use(open_backend("file", {"Directory": str(tmp_path / "peer")}))

    @pytest.fixture
    def same_places(self, backend):
        return [{}, {"Directory": os.path.join(backend.directory, "x", "..")}]

    @pytest.fixture
    def other_places(self, tmp_path):
        return [{"Directory": str(tmp_path)}]

    # -- file only ---------------------------------------------------------------
    def test_layout_and_modes_as_plikd(self, backend):
        ref = make_ref(20, b"x")
        backend.write(ref, io.BytesIO(b"x"))
        path = os.path.join(backend.directory, ref.file_id[:2], ref.file_id)
        assert backend.key(ref) == path and os.path.isfile(path)
        umask = os.umask(0)
        os.umask(umask)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask
        assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o777 & ~umask

    def test_pre_1_3_layout_is_read(self, backend):
        data = payload(5000, seed=21)
        ref = make_ref(21, data)
        legacy = os.path.join(backend.directory, ref.upload_id[:2], ref.upload_id, ref.file_id)
        os.makedirs(os.path.dirname(legacy))
        with open(legacy, "wb") as f:
            f.write(data)
        assert read_all(backend, ref) == data
        assert backend.stat(ref).size == len(data)
        assert backend.candidate_keys(ref) == (backend.key(ref), legacy)
        assert dict(backend.list_blobs()) == {legacy: len(data)}
        # the current layout wins when both exist, as in plikd
        backend.write(make_ref(21, b"new"), io.BytesIO(b"new"))
        assert read_all(backend, ref) == b"new"
        backend.delete(ref)
        assert backend.stat(ref) is None and not os.path.exists(legacy)

    def test_temporary_names_not_listed(self, backend):
        ref = make_ref(22, b"abc")
        backend.write(ref, io.BytesIO(b"abc"))
        stray = os.path.join(backend.directory, ref.file_id[:2], f".{ref.file_id}.partial-deadbeef")
        open(stray, "wb").close()
        assert dict(backend.list_blobs()) == {backend.key(ref): 3}

    def test_check_creates_directory_only_when_asked(self, tmp_path):
        target = tmp_path / "a" / "b"
        b = open_backend("file", {"Directory": str(target)})
        with pytest.raises(ConfigError, match="does not exist"):
            b.check()
        assert not target.exists()
        b.check(create=True)
        assert target.is_dir()

    def test_default_directory_is_plikds(self):
        assert open_backend("file", {}).directory == "files"

    def test_unreadable_blob_is_an_item_error(self, backend):
        ref = make_ref(23, b"secret")
        os.makedirs(os.path.dirname(backend.key(ref)))
        os.symlink(backend.key(ref), backend.key(ref))  # ELOOP: unreadable even for root
        with pytest.raises(ItemError) as info:
            backend.open_read(ref)
        assert not isinstance(info.value, BlobNotFound)
        with pytest.raises(ItemError):
            backend.stat(ref)

    def test_directory_in_place_of_blob(self, backend):
        ref = make_ref(24)
        os.makedirs(backend.key(ref))
        with pytest.raises(BlobNotFound):
            backend.open_read(ref)


def test_stream_backend_stores_nothing():
    b = open_backend("stream", {})
    assert b.features.stores_data is False
    ref = make_ref(30, b"x")
    for call in (lambda: b.open_read(ref), lambda: b.write(ref, io.BytesIO(b"x"))):
        with pytest.raises(ItemError) as info:
            call()
        assert info.value.kind == "stream"
    assert b.stat(ref) is None and list(b.list_blobs()) == []


# -- s3 ------------------------------------------------------------------------

S3_PART = 5 * MiB
SSE_KEY = "k" * 16 + "0123456789abcdef"  # 32 characters, as plikd generates


def s3_options(server, bucket: str, **extra) -> dict:
    opts = {
        "Endpoint": server.endpoint,
        "AccessKeyID": server.access_key,
        "SecretAccessKey": server.secret_key,
        "Bucket": bucket,
        "Location": server.region,
        "PartSize": S3_PART,
    }
    opts.update(extra)
    return opts


class S3Fixtures:
    """The fixtures the conformance suite needs, for one S3 configuration."""

    extra: dict = {}

    @pytest.fixture
    def backend(self, s3_server, s3_bucket):
        yield from in_use(open_backend("s3", s3_options(s3_server, s3_bucket, **self.extra)))

    @pytest.fixture
    def peer(self, s3_server):
        yield from in_use(open_backend("s3", s3_options(s3_server, s3_server.new_bucket(), **{**self.extra, "Prefix": "old"})))

    @pytest.fixture
    def other_places(self):
        return [{"Bucket": "elsewhere"}, {"Prefix": "elsewhere"}, {"Endpoint": "127.0.0.2:1"}]

    @pytest.fixture
    def md5_from_stat(self):
        return (True, False)  # a multipart upload's ETag is not the MD5

    @pytest.fixture
    def large_size(self):
        return 3 * S3_PART + 123  # four parts, the last one short

    @pytest.fixture
    def fail_after(self):
        return S3_PART + S3_PART // 2  # one part sent, the second being read

    @pytest.fixture
    def residue(self):
        return lambda b: b.open_multipart_uploads()

    @pytest.fixture
    def stored_type(self):
        def _read(b, ref):
            from pmigrate.data.s3 import content_type_of

            return content_type_of(b.client.head_object(Bucket=b.bucket, Key=b.key(ref), **b._read_args(ref)))

        return _read


class TestS3Backend(S3Fixtures, BackendConformance):
    pass


class TestS3BackendWithPrefix(S3Fixtures, SharedStore, BackendConformance):
    extra = {"Prefix": "plik/data"}

    @pytest.fixture
    def neighbour_place(self):
        return {"Prefix": "other"}

    def test_keys_under_prefix(self, backend):
        assert backend.key(make_ref(40)) == f"plik/data/{make_ref(40).file_id}"


class TestS3BackendSSES3(S3Fixtures, BackendConformance):
    """SSE-S3: the store encrypts by itself; only the requests that create an object say so."""

    extra = {"SSE": "S3"}


class TestS3BackendSSEC(S3Fixtures, BackendConformance):
    """SSE-C with each file's key. moto accepts the SSE-C headers but does not
    encrypt or check them, so the key on the wire is checked by recording
    every request's headers."""

    extra = {"SSE": "SSE-C"}

    @pytest.fixture
    def backend_details(self):
        return json.dumps({"SSEKey": SSE_KEY})

    @pytest.fixture
    def md5_from_stat(self):
        return (False, False)  # an SSE-C ETag is not the MD5

    def test_file_key_sent_on_every_request(self, backend, mkref):
        seen = []
        backend.client.meta.events.register("before-send.s3", lambda request, **kw: seen.append((request.method, _headers(request))))
        data = payload(3 * S3_PART, seed=41)
        ref = mkref(41, data)
        backend.write(ref, io.BytesIO(data))
        assert read_all(backend, ref) == data
        assert backend.stat(ref).md5 is None  # an SSE-C ETag is not the MD5
        want_key = base64.b64encode(SSE_KEY.encode()).decode()
        want_md5 = base64.b64encode(hashlib.md5(SSE_KEY.encode()).digest()).decode()
        data_requests = [h for m, h in seen if m in ("PUT", "GET", "HEAD", "POST")]
        assert len(data_requests) >= 6  # create, 3 parts, complete, get, head
        for h in data_requests:
            assert h["x-amz-server-side-encryption-customer-algorithm"] == "AES256"
            assert h["x-amz-server-side-encryption-customer-key"] == want_key
            assert h["x-amz-server-side-encryption-customer-key-MD5"] == want_md5

    def test_missing_key_is_an_item_error(self, backend):
        ref = make_ref(42, b"x")
        with pytest.raises(ItemError) as info:
            backend.write(ref, io.BytesIO(b"x"))
        assert info.value.kind == "sse-key"
        assert list(backend.list_blobs()) == []


def _headers(request) -> dict[str, str]:
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}


# -- s3 only -------------------------------------------------------------------


def test_s3_copy_from_declines_when_it_must_stream(s3_server, s3_bucket):
    dst = open_backend("s3", s3_options(s3_server, s3_bucket))
    ref = make_ref(52, b"x")
    other_endpoint = open_backend("s3", s3_options(s3_server, "elsewhere", Endpoint="127.0.0.2:1"))
    assert dst.copy_from(other_endpoint, ref) is False
    ssec = open_backend("s3", s3_options(s3_server, s3_server.new_bucket(), SSE="SSE-C"))
    assert dst.copy_from(ssec, ref) is False


def test_s3_sse_s3_header(s3_server, s3_bucket):
    b = open_backend("s3", s3_options(s3_server, s3_bucket, SSE="S3"))
    sent = []
    b.client.meta.events.register("before-send.s3.PutObject", lambda request, **kw: sent.append(_headers(request)))
    b.write(make_ref(55, b"abc"), io.BytesIO(b"abc"))
    assert sent[0]["x-amz-server-side-encryption"] == "AES256"


def test_s3_check(s3_server):
    name = f"pmt-create-{os.getpid()}"
    b = open_backend("s3", s3_options(s3_server, name))
    with pytest.raises(ConfigError, match="does not exist"):
        b.check()
    b.check(create=True)  # as plikd does
    assert name in [x["Name"] for x in s3_server.client().list_buckets()["Buckets"]]
    b.check()


def test_s3_check_unreachable_endpoint(monkeypatch):
    from pmigrate.data.s3 import S3Backend
    from tests.servers import free_port

    monkeypatch.setattr(S3Backend, "attempts", 1)
    b = open_backend("s3", {"Endpoint": f"127.0.0.1:{free_port()}", "AccessKeyID": "a", "SecretAccessKey": "s3cr3t-value"})
    with pytest.raises(ConfigError, match="cannot reach"):
        b.check()


@pytest.mark.parametrize(
    "options, message",
    [
        ({"Endpoint": "http://h:9000"}, "without scheme"),
        ({"Endpoint": ""}, "Endpoint is missing"),
        ({"SecretAccessKey": ""}, "SecretAccessKey is missing"),
        ({"PartSize": 1024}, "5 MiB"),
        ({"SSE": "KMS"}, "not implemented by plikd"),
        ({"SSE": "aes"}, "unknown SSE"),
        ({"UseSSL": "maybe"}, "UseSSL"),
    ],
)
def test_s3_options_refused_as_plikd_does(options, message):
    base = {"Endpoint": "h:9000", "AccessKeyID": "a", "SecretAccessKey": "secret-xyz"}
    base.update(options)
    with pytest.raises(ConfigError, match=message):
        open_backend("s3", base)


def test_s3_defaults_and_secret_redacted():
    from pmigrate import redact

    b = open_backend("s3", {"Endpoint": "h:9000", "AccessKeyID": "a", "SecretAccessKey": "very-secret-key-42"})
    assert (b.bucket, b.location, b.prefix, b.part_size, b.sse, b.use_ssl) == ("plik", "us-east-1", "", 16 * MiB, "", False)
    assert "very-secret-key-42" not in redact.redact("key=very-secret-key-42")


def test_s3_open_multipart_uploads_are_seen(s3_server, s3_bucket):
    """The residue check of the suite can fail: an upload left open is listed."""
    b = open_backend("s3", s3_options(s3_server, s3_bucket, Prefix="p"))
    b.client.create_multipart_upload(Bucket=s3_bucket, Key=b.key(make_ref(60)))
    assert b.open_multipart_uploads() == [b.key(make_ref(60))]


class _FaultyS3(http.server.BaseHTTPRequestHandler):
    """An S3 endpoint that answers every request with one chosen status and error code.

    With bucket_up, a HeadBucket is answered 200: the store is up, and only
    the requests on objects fail (the retry policy probes with HeadBucket).
    """

    status, code = 503, "SlowDown"
    bucket_up = False

    def _answer(self) -> None:
        if self.bucket_up and self.command == "HEAD" and self.path.strip("/").count("/") == 0:
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.status == 200 and self.command == "GET":  # a body cut short by a dropped connection
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"x" * 1000)
            self.wfile.flush()
            self.close_connection = True
            return
        body = f"<Error><Code>{self.code}</Code><Message>injected</Message></Error>".encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def faulty_s3(monkeypatch):
    from pmigrate.data.s3 import S3Backend

    monkeypatch.setattr(S3Backend, "attempts", 1)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FaultyS3)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.mark.parametrize(
    "status, code, error, write_error",
    [
        # tried again by the backend's policy until it gave up: not to be tried again above it
        pytest.param(503, "SlowDown", RetriesExhausted, RetriesExhausted, marks=pytest.mark.slow),  # backs off for minutes
        (500, "InternalError", RetriesExhausted, RetriesExhausted),
        (404, "NoSuchKey", BlobNotFound, BlobNotFound),
        # a read refused may be one key's; a write refused is the bucket's policy: it stops the run
        (403, "AccessDenied", ItemError, StoreError),
        (404, "NoSuchBucket", StoreError, StoreError),
    ],
)
def test_s3_errors_are_classified(faulty_s3, monkeypatch, status, code, error, write_error):
    monkeypatch.setattr(_FaultyS3, "bucket_up", True)
    monkeypatch.setattr(_FaultyS3, "status", status)
    monkeypatch.setattr(_FaultyS3, "code", code)
    b = open_backend("s3", {"Endpoint": f"127.0.0.1:{faulty_s3.server_port}", "AccessKeyID": "a", "SecretAccessKey": "secret-s3-key"})
    with pytest.raises(error) as info:
        b.open_read(make_ref(70, size=1))
    assert type(info.value) is error
    assert "secret-s3-key" not in str(info.value)
    with pytest.raises(write_error) as info:
        b.write(make_ref(71, b"abc"), io.BytesIO(b"abc"))
    assert type(info.value) is write_error


def test_s3_dropped_connection_mid_read_is_retried_then_given_up(faulty_s3, monkeypatch):
    monkeypatch.setattr(_FaultyS3, "status", 200)  # every body cut short, the HeadBucket probe answered
    b = open_backend("s3", {"Endpoint": f"127.0.0.1:{faulty_s3.server_port}", "AccessKeyID": "a", "SecretAccessKey": "secret-s3-key"})
    with b.open_read(make_ref(73, size=100000)) as f:
        with pytest.raises(RetriesExhausted):
            while f.read(4096):
                pass


@pytest.mark.parametrize("status, code", [(403, "InvalidAccessKeyId"), (403, "SignatureDoesNotMatch"), (403, "")])
def test_s3_check_refused_credentials(faulty_s3, monkeypatch, status, code):
    monkeypatch.setattr(_FaultyS3, "status", status)
    monkeypatch.setattr(_FaultyS3, "code", code)
    b = open_backend("s3", {"Endpoint": f"127.0.0.1:{faulty_s3.server_port}", "AccessKeyID": "a", "SecretAccessKey": "secret-s3-key"})
    with pytest.raises(ConfigError, match="refused the credentials.*check AccessKeyID and SecretAccessKey"):
        b.check(create=True)


def test_s3_server_side_copy_keeps_sse_c_key(s3_server):
    details = json.dumps({"SSEKey": SSE_KEY})
    src = open_backend("s3", s3_options(s3_server, s3_server.new_bucket(), SSE="SSE-C"))
    dst = open_backend("s3", s3_options(s3_server, s3_server.new_bucket(), SSE="SSE-C"))
    data = payload(2000, seed=72)
    ref = dataclasses.replace(make_ref(72, data), backend_details=details)
    src.write(ref, io.BytesIO(data))
    sent = []
    dst.client.meta.events.register("before-send.s3.CopyObject", lambda request, **kw: sent.append(_headers(request)))
    assert dst.copy_from(src, ref) is True
    want = base64.b64encode(SSE_KEY.encode()).decode()
    assert sent[0]["x-amz-server-side-encryption-customer-key"] == want
    assert sent[0]["x-amz-copy-source-server-side-encryption-customer-key"] == want
    assert read_all(dst, ref) == data
