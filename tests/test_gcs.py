"""The gcs backend against gcp-storage-emulator: the conformance suite, then what only gcs does."""

from __future__ import annotations

import hashlib
import io

import pytest

from pmigrate.data.registry import open_backend
from pmigrate.errors import ConfigError
from tests.conformance import BackendConformance, SharedStore, in_use, make_ref, payload, read_all

CHUNK = 256 * 1024  # the smallest resumable chunk GCS accepts


def gcs_options(bucket: str, **extra) -> dict:
    return {"Bucket": bucket, "Folder": "", "ChunkSize": CHUNK, **extra}


class GCSFixtures:
    extra: dict = {}

    @pytest.fixture
    def backend(self, gcs_bucket):
        yield from in_use(open_backend("gcs", gcs_options(gcs_bucket, **self.extra)))

    @pytest.fixture
    def large_size(self):
        return 4 * CHUNK + 123  # a resumable upload of five chunks, the last one short

    @pytest.fixture
    def fail_after(self):
        return CHUNK + CHUNK // 2  # the first chunk is sent when the source breaks

    @pytest.fixture
    def stored_type(self):
        return lambda b, ref: b._bucket.get_blob(b.key(ref)).content_type

    @pytest.fixture
    def peer(self, gcs_server):
        yield from in_use(open_backend("gcs", gcs_options(gcs_server.new_bucket(), **{**self.extra, "Folder": "old"})))

    @pytest.fixture
    def other_places(self):
        return [{"Bucket": "elsewhere"}, {"Folder": "elsewhere"}]


class TestGCSBackend(GCSFixtures, BackendConformance):
    pass


class TestGCSBackendWithFolder(GCSFixtures, SharedStore, BackendConformance):
    extra = {"Folder": "plik"}

    @pytest.fixture
    def neighbour_place(self):
        return {"Folder": "elsewhere"}

    def test_objects_under_folder_as_plikd_names_them(self, backend):
        ref = make_ref(40)
        assert backend.key(ref) == f"plik/{ref.upload_id}.{ref.file_id}"


def test_gcs_key_without_folder(gcs_bucket):
    b = open_backend("gcs", {"Bucket": gcs_bucket, "Folder": ""})
    ref = make_ref(41)
    assert b.key(ref) == f"{ref.upload_id}.{ref.file_id}"


def test_gcs_missing_bucket_is_a_config_error(gcs_server):
    b = open_backend("gcs", gcs_options("no-such-bucket-pmt"))
    for create in (False, True):  # plikd never creates it, so neither does pmigrate
        with pytest.raises(ConfigError, match="does not exist"):
            b.check(create=create)
    assert "no-such-bucket-pmt" not in [x.name for x in gcs_server.client().list_buckets()]


def test_gcs_options_refused():
    with pytest.raises(ConfigError, match="Bucket"):
        open_backend("gcs", {"Bucket": "", "Folder": "x"})
    with pytest.raises(ConfigError, match="262144"):
        open_backend("gcs", {"Bucket": "b", "ChunkSize": 1000})


def test_gcs_no_credentials_is_a_config_error(monkeypatch, tmp_path):
    for var in ("STORAGE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS", "API_ENDPOINT_OVERRIDE", "CLOUDSDK_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no gcloud user credentials
    monkeypatch.setenv("NO_GCE_CHECK", "true")  # no metadata server probe
    with pytest.raises(ConfigError, match="GOOGLE_APPLICATION_CREDENTIALS"):
        open_backend("gcs", {"Bucket": "b"}).check()
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    with pytest.raises(ConfigError, match="credentials"):
        open_backend("gcs", {"Bucket": "b"}).check()


@pytest.mark.parametrize("size", [CHUNK, CHUNK + 1, 2 * CHUNK, 2 * CHUNK + 1])
def test_gcs_sizes_around_the_chunk(gcs_bucket, size):
    """The single-request / resumable boundary, and a resumable upload ending exactly on a chunk."""
    b = open_backend("gcs", gcs_options(gcs_bucket))
    data = payload(size, seed=size)
    for known in (size, -1):
        ref = make_ref(48, data, size=known)
        b.write(ref, io.BufferedReader(io.BytesIO(data), 7000))
        assert read_all(b, ref) == data
        assert b.stat(ref).md5 == hashlib.md5(data).hexdigest()
