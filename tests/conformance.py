"""One conformance suite that every data backend passes.

To run it on a backend, subclass BackendConformance in a test module whose
class name starts with ``Test`` and provide fixtures (methods decorated with
``@pytest.fixture`` on the subclass):

- ``backend`` (required): a fresh, empty, usable backend instance for one test,
  after ``check(create=True)``; close it when the test ends. Nothing else may
  share its storage (a new directory, bucket, prefix or container per test).
- ``large_size`` (optional, default 3 MiB): a blob size that takes the
  backend's multi-part / segmented / resumable path; configure the backend
  with a small part size so that this stays a few MiB.
- ``fail_after`` (optional, default ``large_size // 2``): how many bytes a
  failing source yields before raising; choose it past the first part so an
  upload is really under way when it fails.
- ``backend_details`` (optional, default ""): the files.backend_details text
  every blob ref carries, e.g. an SSE-C key.
- ``residue`` (optional, default: nothing): a callable ``residue(backend) ->
  list[str]`` naming what a failed write may leave out of sight of
  ``list_blobs`` (temporary files, open multipart uploads, segments). The
  suite asserts it is empty after every failure.
- ``stored_type`` (optional, default: not checked): a callable
  ``stored_type(backend, ref) -> str`` reading the content type the store
  kept for a blob, for backends that keep one.
- ``peer`` (required): a second fresh, empty, usable backend of the same kind
  in another place of the same store (another bucket, container or
  directory): the source of server-side copies.
- ``reopen`` (optional, default: the backend's own options): a callable
  ``reopen(**changes) -> DataBackend`` opening, unchecked, a backend of the
  same kind with the backend's options changed as given.
- ``same_places`` / ``other_places`` (optional, default ``[{}]`` / ``[]``):
  option changes for ``reopen`` that keep the backend's location, and that
  move it (another bucket, prefix, account...).
- ``neighbour_place`` (only for a backend that also takes ``SharedStore``):
  option changes for ``reopen`` giving another location that shares the
  backend's store (a sibling prefix or folder of one bucket); the listing must
  not see its blobs. A backend whose location is its whole store (a bucket
  without prefix, a folder) has no neighbour, so no such test.
- ``md5_from_stat`` (optional, default both as ``features.md5_without_read``):
  whether stat() gives the MD5 of a small blob and of a ``large_size`` one.

The features a backend declares gate what is asserted: with
``server_side_copy`` a copy from ``peer`` happens in the store and moves no
byte through this host, without it copy_from() declines; with
``md5_without_read`` stat() gives the MD5 where ``md5_from_stat`` says,
without it never.

Everything else (round trips, atomicity, missing blobs, listing, ids,
locations) is asserted here, through the DataBackend interface only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
from collections.abc import Iterator

import pytest

from pmigrate.data.base import BlobRef, DataBackend
from pmigrate.data.registry import open_backend
from pmigrate.errors import BlobNotFound, InvalidId, ItemError

MiB = 1 << 20
HOSTILE_IDS = ["../../etc/passwd", "AAAA/BBBBBBBBBBB", "", "short", "AAAAAAAAAAAAAAA\n", "..", "AAAAAAAAAAAAAAAA/..", "ÄAAAAAAAAAAAAAAA"]


def make_ref(n: int, data: bytes | None = None, *, content_type: str = "application/octet-stream", size: int | None = None) -> BlobRef:
    """A ref with valid, distinct ids (16 of [A-Za-z0-9])."""
    fid = f"F{n:015d}"
    uid = f"U{n:015d}"
    if size is None:
        size = len(data) if data is not None else -1
    return BlobRef(file_id=fid, upload_id=uid, size=size, content_type=content_type)


def payload(size: int, seed: int = 1) -> bytes:
    """Deterministic, incompressible-looking bytes."""
    import random

    return random.Random(seed).randbytes(size)


class FailingSource(io.RawIOBase):
    """Yields `data` then raises after `fail_after` bytes, as a dropped source connection would."""

    def __init__(self, data: bytes, fail_after: int) -> None:
        self._data = memoryview(data)
        self._fail_after = fail_after
        self.pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        if self.pos >= self._fail_after:
            raise OSError("injected source failure")
        n = min(len(buf), self._fail_after - self.pos, len(self._data) - self.pos)
        buf[:n] = self._data[self.pos : self.pos + n]
        self.pos += n
        return n


class UntouchableSource(io.RawIOBase):
    """A source that fails the test if anything reads it."""

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        raise AssertionError("the backend read the source before validating ids")

    @staticmethod
    def refuse(ref: BlobRef):
        """In place of a source backend's open_read: fails the test if anything reads through it."""
        raise AssertionError(f"{ref.file_id} was read through this host")


def in_use(backend: DataBackend) -> Iterator[DataBackend]:
    """A backend's life in a fixture (``yield from in_use(b)``): checked and created as plikd would, closed after."""
    backend.check(create=True)
    yield backend
    backend.close()


def read_all(backend: DataBackend, ref: BlobRef) -> bytes:
    with backend.open_read(ref) as f:
        return f.read()


def read_in_chunks(backend: DataBackend, ref: BlobRef, chunk: int = 64 * 1024) -> bytes:
    out = bytearray()
    with backend.open_read(ref) as f:
        while True:
            b = f.read(chunk)
            if not b:
                return bytes(out)
            out += b


class BackendConformance:
    """The behaviour the engine relies on; see the module docstring for the fixtures to supply."""

    # -- fixtures a backend may override ---------------------------------------
    @pytest.fixture
    def large_size(self) -> int:
        return 3 * MiB

    @pytest.fixture
    def fail_after(self, large_size: int) -> int:
        return large_size // 2

    @pytest.fixture
    def backend_details(self) -> str:
        return ""

    @pytest.fixture
    def mkref(self, backend_details):
        """make_ref() with this backend's backend_details (e.g. an SSE-C key)."""

        def _mkref(*args, **kwargs) -> BlobRef:
            return dataclasses.replace(make_ref(*args, **kwargs), backend_details=backend_details)

        return _mkref

    @pytest.fixture
    def residue(self):
        return lambda backend: []

    @pytest.fixture
    def stored_type(self):
        return None

    @pytest.fixture
    def reopen(self, backend):
        return lambda **changes: open_backend(backend.name, {**backend.options, **changes})

    @pytest.fixture
    def same_places(self) -> list[dict]:
        return [{}]

    @pytest.fixture
    def other_places(self) -> list[dict]:
        return []

    @pytest.fixture
    def md5_from_stat(self, backend) -> tuple[bool, bool]:
        return (backend.features.md5_without_read,) * 2

    # -- helpers ---------------------------------------------------------------
    @staticmethod
    def assert_absent(backend: DataBackend, ref: BlobRef, residue) -> None:
        assert backend.stat(ref) is None
        with pytest.raises(BlobNotFound):
            read_all(backend, ref)
        assert [k for k, _ in backend.list_blobs()] == []
        assert residue(backend) == []

    # -- round trips -------------------------------------------------------------
    def test_round_trip(self, backend, mkref):
        data = payload(200_000)
        ref = mkref(1, data)
        backend.write(ref, io.BytesIO(data))
        assert read_all(backend, ref) == data
        assert read_in_chunks(backend, ref, 7_000) == data
        st = backend.stat(ref)
        assert st is not None and st.size == len(data)
        if st.md5 is not None:
            assert st.md5 == hashlib.md5(data).hexdigest()

    def test_zero_byte_blob(self, backend, mkref):
        ref = mkref(2, b"")
        backend.write(ref, io.BytesIO(b""))
        assert read_all(backend, ref) == b""
        assert backend.stat(ref).size == 0
        assert [(k, s) for k, s in backend.list_blobs()] == [(backend.key(ref), 0)]

    def test_large_blob_multi_part(self, backend, mkref, large_size, residue):
        data = payload(large_size, seed=3)
        ref = mkref(3, data)
        backend.write(ref, io.BufferedReader(FailingSource(data, len(data) + 1)))  # a non-seekable stream
        assert backend.stat(ref).size == len(data)
        assert read_in_chunks(backend, ref, MiB) == data
        assert residue(backend) == []

    def test_unknown_size_is_accepted(self, backend, mkref):
        data = payload(1000, seed=4)
        ref = mkref(4, size=-1)
        backend.write(ref, io.BytesIO(data))
        assert read_all(backend, ref) == data

    def test_overwrite_replaces_content(self, backend, mkref):
        ref_a = mkref(5, b"first version")
        backend.write(ref_a, io.BytesIO(b"first version"))
        ref_b = mkref(5, b"second, longer version")
        backend.write(ref_b, io.BytesIO(b"second, longer version"))
        assert read_all(backend, ref_b) == b"second, longer version"
        assert len(list(backend.list_blobs())) == 1

    def test_unicode_content_type(self, backend, mkref, stored_type):
        data = b"caf\xc3\xa9\n"
        ctype = "text/plain; charset=utf-8; name=\"café-日本.txt\""
        ref = mkref(6, data, content_type=ctype)
        backend.write(ref, io.BytesIO(data))
        assert read_all(backend, ref) == data
        if stored_type is not None:
            assert stored_type(backend, ref) == ctype

    # -- atomicity ---------------------------------------------------------------
    def test_failed_write_leaves_nothing(self, backend, mkref, large_size, fail_after, residue):
        data = payload(large_size, seed=7)
        ref = mkref(7, data)
        src = FailingSource(data, fail_after)
        with pytest.raises(Exception) as info:
            backend.write(ref, io.BufferedReader(src, 256 * 1024))
        assert "injected" in str(info.value) or isinstance(info.value, ItemError)
        assert src.pos >= min(fail_after, 1)  # the upload was under way
        self.assert_absent(backend, ref, residue)

    def test_failed_write_keeps_previous_blob(self, backend, mkref, residue):
        ref = mkref(8, b"old bytes")
        backend.write(ref, io.BytesIO(b"old bytes"))
        data = payload(100_000, seed=8)
        with pytest.raises(Exception) as info:
            backend.write(mkref(8, data), FailingSource(data, 50_000))
        assert "injected" in str(info.value) or isinstance(info.value, ItemError)
        assert read_all(backend, ref) == b"old bytes"
        assert residue(backend) == []

    @pytest.mark.parametrize("delta", [-1, 1])
    def test_wrong_length_is_refused(self, backend, mkref, residue, delta):
        data = payload(10_000, seed=9)
        ref = mkref(9, data, size=len(data) + delta)
        with pytest.raises(ItemError) as info:
            backend.write(ref, io.BytesIO(data))
        assert info.value.kind == "size-mismatch"
        self.assert_absent(backend, ref, residue)

    def test_unknown_size_stores_what_comes(self, backend, mkref, large_size):
        """files.size NULL (size -1): the blob is stored as long as it is, one request or many."""
        for n, size in ((21, 10_000), (22, large_size)):
            data = payload(size, seed=n)
            ref = mkref(n, data, size=-1)
            backend.write(ref, io.BytesIO(data))
            assert read_all(backend, ref) == data

    # -- missing, stat, delete ---------------------------------------------------
    def test_missing_blob(self, backend, mkref):
        ref = mkref(10, size=5)
        with pytest.raises(BlobNotFound) as info:
            backend.open_read(ref)
        assert info.value.kind == "missing"
        assert backend.stat(ref) is None
        backend.delete(ref)  # absent is not an error

    def test_delete(self, backend, mkref):
        keep, gone = mkref(11, b"keep"), mkref(12, b"gone")
        backend.write(keep, io.BytesIO(b"keep"))
        backend.write(gone, io.BytesIO(b"gone"))
        backend.delete(gone)
        assert backend.stat(gone) is None
        with pytest.raises(BlobNotFound):
            backend.open_read(gone)
        assert read_all(backend, keep) == b"keep"

    def test_list_blobs_for_unowned_audit(self, backend, mkref):
        refs = {}
        for n, size in [(13, 0), (14, 1), (15, 4096), (16, 70_000)]:
            data = payload(size, seed=n)
            ref = mkref(n, data)
            backend.write(ref, io.BytesIO(data))
            refs[backend.key(ref)] = size
        listed = dict(backend.list_blobs())
        assert listed == refs
        # what an audit does: every listed key that no file row claims is unowned
        owned = {k for n in (13, 14) for k in backend.candidate_keys(mkref(n))}
        assert sorted(set(listed) - owned) == sorted(backend.key(mkref(n)) for n in (15, 16))

    # -- before the run: what the dry run asks ------------------------------------
    def test_probe_write_takes_back_what_it_wrote(self, backend, mkref):
        ref = mkref(18, b"kept")
        backend.write(ref, io.BytesIO(b"kept"))
        before = dict(backend.list_blobs())
        assert backend.probe_write() == ""
        assert dict(backend.list_blobs()) == before
        assert backend.read_marker() is None
        assert read_all(backend, ref) == b"kept"

    def test_check_read_sizes_a_blob_without_reading_it(self, backend, mkref):
        ref = mkref(19, b"four")
        backend.write(ref, io.BytesIO(b"four"))
        assert backend.check_read(ref).size == 4
        assert backend.check_read(mkref(20, size=4)) is None

    # -- ids ---------------------------------------------------------------------
    @pytest.mark.parametrize("hostile", HOSTILE_IDS)
    def test_hostile_file_id_refused_before_io(self, backend, hostile):
        ref = BlobRef(file_id=hostile, upload_id="U000000000000001", size=1)
        for call in (backend.key, backend.candidate_keys, backend.open_read, backend.stat, backend.delete):
            with pytest.raises(InvalidId):
                call(ref)
        with pytest.raises(InvalidId):
            backend.write(ref, UntouchableSource())
        assert list(backend.list_blobs()) == []

    @pytest.mark.parametrize("hostile", HOSTILE_IDS)
    def test_hostile_upload_id_never_in_a_key(self, backend, backend_details, hostile):
        ref = BlobRef(file_id="F000000000000001", upload_id=hostile, size=1, backend_details=backend_details)
        try:
            keys = backend.candidate_keys(ref)
        except InvalidId:
            keys = None
        if keys is not None:  # this backend's keys do not use the upload id
            assert not any(hostile and hostile in k for k in keys)
            assert backend.stat(ref) is None
        with pytest.raises((InvalidId, BlobNotFound)):
            backend.open_read(ref)
        assert list(backend.list_blobs()) == []

    # -- locations -----------------------------------------------------------------
    def test_same_location(self, backend, peer, reopen, same_places, other_places):
        for changes in same_places:
            twin = reopen(**changes)
            assert backend.same_location(twin) and twin.same_location(backend), changes
        for other in [peer, *(reopen(**changes) for changes in other_places)]:
            assert not backend.same_location(other) and not other.same_location(backend), other.describe()
        assert not backend.same_location(open_backend("stream", {}))

    # -- features ----------------------------------------------------------------
    @pytest.mark.parametrize("large", [False, True], ids=["small", "large"])
    def test_server_side_copy(self, backend, peer, mkref, large_size, residue, stored_type, monkeypatch, tmp_path, large):
        data = payload(large_size if large else 1000, seed=26)
        ref = mkref(26, data, content_type="image/png")
        peer.write(ref, io.BytesIO(data))
        monkeypatch.setattr(peer, "open_read", UntouchableSource.refuse)  # no byte through this host
        if not backend.features.server_side_copy:
            assert backend.copy_from(peer, ref) is False
            assert list(backend.list_blobs()) == [] and residue(backend) == []
            return
        assert backend.copy_from(open_backend("file", {"Directory": str(tmp_path / "elsewhere")}), ref) is False
        assert backend.copy_from(peer, ref) is True
        assert read_all(backend, ref) == data
        st = backend.stat(ref)
        assert st.size == len(data) and st.md5 in (None, hashlib.md5(data).hexdigest())
        if stored_type is not None:
            assert stored_type(backend, ref) == "image/png"
        assert residue(backend) == []
        with pytest.raises(ItemError) as info:
            backend.copy_from(peer, mkref(26, size=len(data) + 1))
        assert info.value.kind == "size-mismatch"
        with pytest.raises(BlobNotFound):
            backend.copy_from(peer, mkref(27, size=3))
        assert residue(backend) == [] and read_all(backend, ref) == data

    def test_md5_without_read(self, backend, mkref, large_size, md5_from_stat):
        small, large = payload(1000, seed=28), payload(large_size, seed=29)
        backend.write(mkref(28, small), io.BytesIO(small))
        backend.write(mkref(29, large), io.BytesIO(large))
        got = (backend.stat(mkref(28)).md5, backend.stat(mkref(29)).md5)
        if not backend.features.md5_without_read:
            assert got == (None, None)
            return
        want = tuple(hashlib.md5(d).hexdigest() if known else None for d, known in zip((small, large), md5_from_stat))
        assert got == want

    def test_sync_after_writes(self, backend, mkref):
        ref = mkref(17, b"durable")
        backend.write(ref, io.BytesIO(b"durable"))
        backend.sync()
        assert read_all(backend, ref) == b"durable"


class SharedStore:
    """For a backend whose location is part of a store another location shares: a ``neighbour_place`` fixture."""

    def test_listing_keeps_to_its_location(self, backend, mkref, reopen, neighbour_place):
        neighbour = reopen(**neighbour_place)
        ref = mkref(25, b"abc")
        backend.write(ref, io.BytesIO(b"abc"))
        neighbour.write(mkref(25, b"not ours"), io.BytesIO(b"not ours"))
        assert neighbour.key(ref) != backend.key(ref)
        assert dict(backend.list_blobs()) == {backend.key(ref): 3}
        assert read_all(backend, ref) == b"abc"
