"""The conformance suite on every backend built here, plus what only one backend does."""

from __future__ import annotations

import io
import os
import stat

import pytest

from pmigrate.data.base import BlobRef
from pmigrate.data.registry import open_backend
from pmigrate.errors import BlobNotFound, ConfigError, ItemError
from tests.conformance import BackendConformance, make_ref, payload, read_all


def _file_residue(backend) -> list[str]:
    """Temporary files (hidden names) anywhere under Directory."""
    found = []
    for root, _dirs, names in os.walk(backend.directory):
        found += [os.path.join(root, n) for n in names if n.startswith(".")]
    return found


class TestFileBackend(BackendConformance):
    @pytest.fixture
    def backend(self, tmp_path):
        b = open_backend("file", {"Directory": str(tmp_path / "files")})
        b.check(create=True)
        yield b
        b.close()

    @pytest.fixture
    def residue(self):
        return _file_residue

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

    def test_same_location(self, tmp_path):
        (tmp_path / "d").mkdir()
        a = open_backend("file", {"Directory": str(tmp_path / "d")})
        b = open_backend("file", {"Directory": str(tmp_path / "x" / ".." / "d")})
        c = open_backend("file", {"Directory": str(tmp_path)})
        assert a.same_location(b) and not a.same_location(c)

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
