"""The swift backend against a real single-node Swift: the conformance suite, then what only swift does."""

from __future__ import annotations

import io

import pytest

from pmigrate.data.registry import open_backend
from pmigrate.data.swift import SwiftBackend, connection_kwargs
from pmigrate.errors import ConfigError
from tests.conformance import BackendConformance, in_use, make_ref, payload, read_all

SEGMENT = 256 * 1024  # small segments, so that a few hundred KiB take the large-object path


@pytest.fixture
def swift_backend(swift_server):
    """A backend on a fresh container, with small segments."""
    made = []

    def _make(**extra) -> SwiftBackend:
        b = SwiftBackend(swift_server.options(swift_server.new_container_name(), **extra), segment_size=SEGMENT)
        b.check(create=True)
        made.append(b)
        return b

    yield _make
    for b in made:
        b.close()


class TestSwiftBackend(BackendConformance):
    @pytest.fixture
    def backend(self, swift_backend):
        return swift_backend()

    @pytest.fixture
    def large_size(self):
        return 3 * SEGMENT + 123  # four segments, the last one short

    @pytest.fixture
    def fail_after(self):
        return SEGMENT + SEGMENT // 2  # one segment stored when the source breaks

    @pytest.fixture
    def residue(self):
        return lambda b: b.orphan_segments()

    @pytest.fixture
    def stored_type(self):
        return lambda b, ref: b._conn().head_object(b.container, b.key(ref))["content-type"]

    @pytest.fixture
    def peer(self, swift_server):
        """Segments larger than large_size: its blobs are single objects, which Swift copies server-side."""
        yield from in_use(SwiftBackend(swift_server.options(swift_server.new_container_name()), segment_size=4 * SEGMENT))

    @pytest.fixture
    def other_places(self):
        return [{"Container": "elsewhere"}, {"UserName": "test2:tester2", "ApiKey": "testing2"}]

    @pytest.fixture
    def md5_from_stat(self):
        return (True, False)  # a static large object's ETag is not the MD5


def test_swift_layout_as_plikd(swift_backend, swift_server):
    b = swift_backend()
    ref = make_ref(40, b"abc")
    b.write(ref, io.BytesIO(b"abc"))
    assert b.key(ref) == f"{ref.upload_id}.{ref.file_id}"
    _h, body = swift_server.connection().get_object(b.container, f"{ref.upload_id}.{ref.file_id}")
    assert body == b"abc"


def test_swift_large_object_is_segmented(swift_backend, swift_server):
    b = swift_backend()
    data = payload(2 * SEGMENT + 10, seed=41)
    ref = make_ref(41, data, content_type="video/mp4")
    b.write(ref, io.BytesIO(data))
    head = swift_server.connection().head_object(b.container, b.key(ref))
    assert head["x-static-large-object"] == "True" and head["content-type"] == "video/mp4"
    assert len(b.segments()) == 3
    st = b.stat(ref)
    assert st.size == len(data) and st.md5 is None  # an SLO ETag is not the MD5
    assert dict(b.list_blobs()) == {b.key(ref): len(data)}
    assert read_all(b, ref) == data
    # rewriting it replaces the segments; deleting it removes them
    b.write(ref, io.BytesIO(data))
    assert len(b.segments()) == 3 and read_all(b, ref) == data
    b.delete(ref)
    assert b.stat(ref) is None and b.segments() == []


def test_swift_exact_multiple_of_segment(swift_backend):
    b = swift_backend()
    data = payload(2 * SEGMENT, seed=42)
    ref = make_ref(42, data)
    b.write(ref, io.BytesIO(data))
    assert len(b.segments()) == 2 and read_all(b, ref) == data


def test_swift_container_created_only_when_asked(swift_server):
    name = swift_server.new_container_name()
    b = open_backend("swift", swift_server.options(name))
    with pytest.raises(ConfigError, match="does not exist"):
        b.check()
    b.check(create=True)  # as plikd does on first use
    swift_server.connection().head_container(name)
    b.check()


def test_swift_bad_credentials_are_a_config_error(swift_server):
    b = open_backend("swift", swift_server.options("plik", key="wrong-key-123"))
    with pytest.raises(ConfigError, match="refused the credentials") as info:
        b.check()
    assert "wrong-key-123" not in str(info.value)


def test_swift_copy_declined_across_accounts_and_for_large_objects(swift_server, swift_backend):
    dst = swift_backend()
    other = SwiftBackend(swift_server.options(swift_server.new_container_name(), user="test2:tester2", key="testing2"))
    other.check(create=True)
    ref = make_ref(46, b"x")
    other.write(ref, io.BytesIO(b"x"))
    assert dst.copy_from(other, ref) is False  # another account
    slo = swift_backend()
    data = payload(SEGMENT + 1, seed=47)
    slo.write(make_ref(47, data), io.BytesIO(data))
    assert dst.copy_from(slo, make_ref(47, data)) is False  # a manifest: stream it
    assert list(dst.list_blobs()) == []


# -- plikd's connection settings onto swiftclient ----------------------------------


def test_connection_v1_from_url():
    kw = connection_kwargs({"AuthUrl": "http://h/auth/v1.0", "UserName": "a:b", "ApiKey": "k"})
    assert (kw["authurl"], kw["user"], kw["key"], kw["auth_version"], kw["retries"], kw["timeout"]) == (
        "http://h/auth/v1.0", "a:b", "k", "1", 3, 60.0,
    )  # fmt: skip


def test_connection_preauthenticated():
    kw = connection_kwargs({"StorageUrl": "http://h/v1/AUTH_x", "AuthToken": "tok"})
    assert kw["preauthurl"] == "http://h/v1/AUTH_x" and kw["preauthtoken"] == "tok" and "authurl" not in kw


@pytest.mark.parametrize(
    "options, message",
    [
        ({"AuthUrl": "http://h/auth"}, "AuthVersion"),
        ({"AuthUrl": "http://h/v1.0", "TrustId": "t"}, "TrustId"),
        ({}, "AuthUrl is missing"),
        ({"AuthUrl": "http://h/v1.0", "Internal": True}, "Internal"),
    ],
)
def test_connection_settings_refused(options, message):
    with pytest.raises(ConfigError, match=message):
        connection_kwargs(options)


def test_connection_keystone_needs_keystoneclient_or_maps_v3():
    import importlib.util

    opts = {"AuthUrl": "https://k/v3", "UserName": "u", "ApiKey": "p", "Domain": "d", "Tenant": "proj", "Region": "R"}
    if importlib.util.find_spec("keystoneclient") is None:
        with pytest.raises(ConfigError, match="python-keystoneclient"):
            connection_kwargs(opts)
        return
    kw = connection_kwargs(opts)
    assert kw["auth_version"] == "3"
    assert kw["os_options"] == {
        "region_name": "R", "endpoint_type": "public", "user_domain_name": "d", "project_name": "proj",
        "project_domain_name": "d",
    }  # fmt: skip


def test_segment_size_refused():
    with pytest.raises(ConfigError, match="SegmentSize"):
        open_backend("swift", {"AuthUrl": "http://h/v1.0", "SegmentSize": 0})


@pytest.mark.parametrize("size", [SEGMENT, SEGMENT + 1, 2 * SEGMENT + 1])
def test_swift_sizes_around_the_segment(swift_backend, size):
    b = swift_backend()
    data = payload(size, seed=size)
    for known in (size, -1):  # an unknown size is one PUT (Swift takes up to 5 GiB so)
        ref = make_ref(49, data, size=known)
        b.write(ref, io.BufferedReader(io.BytesIO(data), 7000))
        assert read_all(b, ref) == data
    assert b.orphan_segments() == []


# -- a writer killed mid-upload ------------------------------------------------------

_KILLED_WRITER = """
import io, sys, time
from pmigrate.data.swift import SwiftBackend
from tests.conformance import make_ref, payload

options, segment, size = eval(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])


class Stalling(io.RawIOBase):
    '''Two and a half segments, then nothing more: a source that hangs.'''

    def __init__(self):
        self.data, self.pos = payload(size, seed=60), 0

    def readable(self):
        return True

    def readinto(self, buf):
        if self.pos >= 5 * segment // 2:
            time.sleep(600)
        n = min(len(buf), 5 * segment // 2 - self.pos)
        buf[:n] = self.data[self.pos : self.pos + n]
        self.pos += n
        return n


SwiftBackend(options, segment_size=segment).write(make_ref(60, size=size), io.BufferedReader(Stalling(), 65536))
"""


def test_swift_discard_partial_clears_what_a_killed_writer_left(swift_server, swift_backend):
    """kill -9 of a process writing a large object, then what the engine does before the retry."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import REPO

    b = swift_backend()
    ref = make_ref(60, size=4 * SEGMENT)
    old = payload(2 * SEGMENT + 5, seed=61)  # the version stored before: it stays whole
    b.write(make_ref(60, old), io.BytesIO(old))
    other = payload(SEGMENT + 9, seed=62)
    b.write(make_ref(62, other), io.BytesIO(other))
    stranger = f"{b.key(ref)}/copied-by-hand"  # a segment-like name this backend never gives
    b._conn().put_object(b.segment_container, stranger, contents=b"not ours")
    before = set(b.segments())

    env = dict(os.environ, PYTHONPATH=str(REPO))
    writer = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, repr(b.options), str(SEGMENT), str(4 * SEGMENT)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while len(set(b.segments()) - before) < 2:  # two segments sent, the third being read
            assert writer.poll() is None, writer.stderr.read().decode()
            assert time.monotonic() < deadline, "the large upload never began"
            time.sleep(0.05)
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        writer.stderr.close()
    left = set(b.segments()) - before
    assert len(left) == 2 and all(n.startswith(f"{b.key(ref)}/") for n in left)

    b.discard_partial(ref)
    assert set(b.segments()) == before  # the stored version's, the other blob's, and the stranger
    assert read_all(b, make_ref(60, old)) == old and read_all(b, make_ref(62, other)) == other
    b.discard_partial(make_ref(63, size=1))  # nothing there: no error
    assert set(b.segments()) == before
