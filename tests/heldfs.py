"""One regular file whose reads wait until the test lets them through: a stalled disk, on demand.

A folder becomes a FUSE mount served by a thread of the test process,
speaking the kernel's FUSE protocol on /dev/fuse directly (no libfuse). The
file in it is regular (pmigrate reads nothing else), and a read past the
bytes allowed so far waits, as on a disk or network that stalls, until
allow() lets it through. A reader killed while it waits is answered at once
(the kernel sends an INTERRUPT), so it dies as it would elsewhere.

Needs root (mount(2)) and /dev/fuse.
"""

from __future__ import annotations

import atexit
import ctypes
import errno
import os
import select
import stat
import struct
import threading
from pathlib import Path

_IN = struct.Struct("<IIQQIIII")  # fuse_in_header
_OUT = struct.Struct("<IiQ")  # fuse_out_header
_ATTR = struct.Struct("<QQQQQQIIIIIIIIII")  # fuse_attr
_INIT_OUT = struct.Struct("<IIIIHHIIHHI7I")

# opcodes
LOOKUP, FORGET, GETATTR, OPEN, READ, RELEASE, FLUSH = 1, 2, 3, 14, 15, 18, 25
INIT, INTERRUPT, DESTROY, BATCH_FORGET = 26, 36, 38, 42
FOPEN_DIRECT_IO = 1  # every read() reaches this server, none is served from the page cache
ROOT, FILE = 1, 2
MS_NOSUID, MS_NODEV, MNT_DETACH = 2, 4, 2

_libc = ctypes.CDLL(None, use_errno=True)


def available() -> str:
    """Why a held file cannot be made here, or '' when it can."""
    if os.geteuid() != 0:
        return "mounting a FUSE file system needs root"
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    return ""


class HeldFile:
    """``folder/name`` holding ``data``; reads get the first ``allowed`` bytes at once, the rest when allowed."""

    def __init__(self, folder: Path, name: str, data: bytes, *, allowed: int = 0) -> None:
        self.folder = Path(folder)
        self.path = self.folder / name
        self._name = name.encode()
        self._data = data
        self._allowed = allowed
        self._held: dict[int, tuple[int, int]] = {}  # unique -> (offset, size) of reads waiting
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
        opts = f"fd={self._fd},rootmode=40000,user_id=0,group_id=0,allow_other".encode()
        if _libc.mount(b"heldfs", str(self.folder).encode(), b"fuse.heldfs", MS_NOSUID | MS_NODEV, opts) != 0:
            err = ctypes.get_errno()
            os.close(self._fd)
            raise OSError(err, f"cannot mount a FUSE file system on {folder}: {os.strerror(err)}")
        self._thread = threading.Thread(target=self._serve, name="heldfs", daemon=True)
        self._thread.start()
        atexit.register(self.close)  # never a dead mount left in a temporary folder

    # -- the test's side ---------------------------------------------------------
    def allow(self, n: int | None = None) -> None:
        """Let reads through up to byte n (None: to the end), now and from now on."""
        with self._lock:
            if self._stop.is_set():
                return
            self._allowed = len(self._data) if n is None else n
            for unique, (offset, size) in list(self._held.items()):
                if offset < self._allowed:
                    del self._held[unique]
                    self._answer_read(unique, offset, size)

    def close(self) -> None:
        """Unmount; whatever still waits fails with EIO. Safe to call twice."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(timeout=10)
        with self._lock:
            for unique in list(self._held):
                self._reply(unique, errno.EIO)
            self._held.clear()
        _libc.umount2(str(self.folder).encode(), MNT_DETACH)
        os.close(self._fd)

    def __enter__(self) -> HeldFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the kernel's side ------------------------------------------------------------
    def _serve(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        while not self._stop.is_set():
            if not poller.poll(100):
                continue
            try:
                buf = os.read(self._fd, (1 << 20) + 4096)
            except OSError as exc:
                if exc.errno in (errno.EINTR, errno.EAGAIN, errno.ENOENT):
                    continue  # ENOENT: a request withdrawn before it was read
                return  # ENODEV: unmounted
            length, opcode, unique, node = _IN.unpack_from(buf)[:4]
            with self._lock:
                self._handle(opcode, unique, node, buf[_IN.size : length])

    def _handle(self, opcode: int, unique: int, node: int, body: bytes) -> None:
        if opcode == INIT:
            max_readahead = struct.unpack_from("<III", body)[2]
            self._reply(unique, 0, _INIT_OUT.pack(7, 31, max_readahead, 0, 16, 12, 1 << 17, 1, 32, 0, 0, *([0] * 7)))
        elif opcode == LOOKUP:
            if node == ROOT and body.rstrip(b"\0") == self._name:
                self._reply(unique, 0, struct.pack("<QQQQII", FILE, 0, 0, 0, 0, 0) + self._attr(FILE))
            else:
                self._reply(unique, errno.ENOENT)
        elif opcode == GETATTR:
            self._reply(unique, 0, struct.pack("<QII", 0, 0, 0) + self._attr(node))
        elif opcode == OPEN:
            self._reply(unique, 0, struct.pack("<QII", 0, FOPEN_DIRECT_IO, 0))
        elif opcode == READ:
            offset, size = struct.unpack_from("<QQI", body)[1:]
            if offset < self._allowed or offset >= len(self._data):
                self._answer_read(unique, offset, size)
            else:
                self._held[unique] = (offset, size)
        elif opcode == INTERRUPT:
            (target,) = struct.unpack_from("<Q", body)
            if self._held.pop(target, None) is not None:
                self._reply(target, errno.EINTR)  # its reader was killed: let it die
        elif opcode in (FORGET, BATCH_FORGET):
            pass  # no answer expected
        elif opcode in (RELEASE, FLUSH, DESTROY):
            self._reply(unique, 0)
        else:
            self._reply(unique, errno.ENOSYS)

    def _attr(self, node: int) -> bytes:
        if node == FILE:
            mode, size, nlink = stat.S_IFREG | 0o644, len(self._data), 1
        else:
            mode, size, nlink = stat.S_IFDIR | 0o755, 0, 2
        return _ATTR.pack(node, size, (size + 511) // 512, 0, 0, 0, 0, 0, 0, mode, nlink, 0, 0, 0, 4096, 0)

    def _answer_read(self, unique: int, offset: int, size: int) -> None:
        end = min(offset + size, len(self._data), max(self._allowed, offset))
        self._reply(unique, 0, self._data[offset:end])

    def _reply(self, unique: int, error: int, payload: bytes = b"") -> None:
        try:
            os.write(self._fd, _OUT.pack(_OUT.size + len(payload), -error, unique) + payload)
        except OSError:
            pass  # ENOENT: the request was withdrawn (its reader died) before the answer
