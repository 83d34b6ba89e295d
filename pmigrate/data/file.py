"""plikd's "file" data backend: one file per blob under Directory.

Layout as plikd's server/data/file: `{Directory}/{F.id[0:2]}/{F.id}`, and the
pre-1.3 `{Directory}/{U.id[0:2]}/{U.id}/{F.id}` that plikd still reads. Modes
as plikd's (files 0666, directories 0777, both less the umask).

Only regular files are read: a FIFO, device or socket where a blob should
be is an error for that blob (opened without blocking, checked on the open
descriptor), as is a symlink that leads out of Directory, unless the run
allows it (--follow-outside-symlinks) for a deployment that links on purpose.

Writes go to `.{id}.partial-<tag><n>` in the final directory (a random tag
per backend, a counter) and are renamed into place, so a reader never sees a
partial blob under its final name. They are not fsynced one by one (an fsync
per small file costs most of the throughput); the engine calls sync() once
per journal batch, which flushes the whole filesystem with syncfs(2), before
it records the batch as done. A blob's folder is made when creating its
temporary file first finds it missing. A blob below BUFFER is read straight
into the caller's buffer (_SmallBlob), and the copy writes a small blob it
holds whole with write_bytes(): no stream object and one write each.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import io
import itertools
import os
import secrets
import stat as stat_mod
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO

from pmigrate.batching import pieces
from pmigrate.data.base import OWNER_MARKER, PROBE_PREFIX, BlobRef, BlobStat, DataBackend, Features, FreeSpace
from pmigrate.data.sizing import size_error
from pmigrate.data.spec import BackendSpec, Option
from pmigrate.errors import FULL, PERMISSION, QUOTA, READ_ONLY, BlobNotFound, ConfigError, FatalError, ItemError, Kind, StoreAbsent, StoreError
from pmigrate.ids import check_id
from pmigrate.quote import shown

BUFFER = 1 << 20  # large reads and writes: fewer syscalls per byte
SMALL = 64 << 10  # the buffer of blobs below this size, which one read copies whole
PARTIAL = ".partial-"
# Run option, not a plikd key: read blobs whose symlinks lead out of Directory.
FOLLOW_OUTSIDE = "pmigrate.follow_outside_symlinks"
# O_NONBLOCK: opening a FIFO returns at once instead of waiting for a writer (no effect on a regular file).
_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
_KINDS = {stat_mod.S_IFIFO: "a FIFO", stat_mod.S_IFCHR: "a character device", stat_mod.S_IFBLK: "a block device",
          stat_mod.S_IFSOCK: "a socket", stat_mod.S_IFDIR: "a directory"}  # fmt: skip
_fadvise = getattr(os, "posix_fadvise", None)

# plikd's server/data/file Config: relative to the working directory, as plikd reads it.
OPTIONS = (
    Option(name="Directory", default="files", path=True,
           check=lambda v: "" if v else "is empty: name the folder that holds the blobs"),
)  # fmt: skip


def describe_options(o: Mapping[str, Any]) -> str:
    return f"file {o.get('Directory')}"


def location(o: Mapping[str, Any]) -> tuple:
    return ("file", os.path.realpath(o["Directory"]))


class FileBackend(DataBackend):
    name = "file"
    features = Features(stores_data=True, server_side_copy=False, md5_without_read=False, listable=True)

    def __init__(self, options: Mapping[str, Any]) -> None:
        super().__init__(options)
        self.directory: str = self.options["Directory"]  # settled by OPTIONS (pmigrate.data.registry)
        self._prefix = os.path.join(self.directory, "")  # Directory and a separator: blob paths without os.path.join
        self.follow_outside = bool(self.options.pop(FOLLOW_OUTSIDE, False))
        self._root: str | None = None  # Directory with its symlinks resolved, once
        self._buffer: bytearray | None = None
        self._small: bytearray | None = None  # reused for every blob that fits: no allocation per small file
        self._tag = ""  # temporary names: a random tag and a counter, no getrandom per blob
        self._serial = itertools.count()

    # -- locations ---------------------------------------------------------
    def key(self, ref: BlobRef) -> str:
        fid = check_id(ref.file_id, what="file id")
        return f"{self._prefix}{fid[:2]}{os.sep}{fid}"

    def legacy_key(self, ref: BlobRef) -> str:
        """Where plik before 1.3 kept the blob."""
        fid = check_id(ref.file_id, what="file id")
        uid = check_id(ref.upload_id, what="upload id")
        return os.path.join(self.directory, uid[:2], uid, fid)

    def candidate_keys(self, ref: BlobRef) -> tuple[str, ...]:
        # No upload id: a blob known only by its file id (a journal row older than upload ids)
        return (self.key(ref), self.legacy_key(ref)) if ref.upload_id else (self.key(ref),)

    def describe(self) -> str:
        return f"file:{self.directory}"

    def same_location(self, other: DataBackend) -> bool:
        if not isinstance(other, FileBackend):
            return False
        try:
            return os.path.samefile(self.directory, other.directory)
        except OSError:
            return os.path.abspath(self.directory) == os.path.abspath(other.directory)

    # -- lifecycle ---------------------------------------------------------
    def check(self, *, create: bool = False) -> None:
        if create:
            try:
                os.makedirs(self.directory, 0o777, exist_ok=True)
            except OSError as exc:
                raise self._cannot_create(exc) from None
        if not os.path.isdir(self.directory):
            raise StoreAbsent(
                f"file backend: Directory {self.directory!r} does not exist: fix DataBackendConfig.Directory"
            )
        if create:
            self.probe_write()

    def probe_write(self) -> str:
        """A file created and removed in Directory: what access(2) says is not what NFS or a mount will do."""
        path = os.path.join(self.directory, f"{PROBE_PREFIX}{secrets.token_hex(6)}")
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600))
            os.unlink(path)
        except OSError as exc:
            raise self._unwritable(exc) from None
        return ""

    def _unwritable(self, exc: OSError) -> ConfigError:
        if exc.errno == errno.EROFS or _read_only(self.directory):
            return ConfigError(
                f"file backend: Directory {self.directory!r} is on a read-only file system: "
                "remount it read-write, or choose another Directory"
            )
        if exc.errno in (errno.EACCES, errno.EPERM):
            return ConfigError(
                f"file backend: Directory {self.directory!r} is not writable by user {_user()}: "
                "give that user write access (chown, chmod), or run pmigrate as the user plikd runs as"
            )
        return ConfigError(
            f"file backend: Directory {self.directory!r} is not writable ({exc.strerror}): "
            "fix its permissions or mount, or choose another Directory"
        )

    def probe_create(self) -> None:
        """Directory is missing: a folder made and removed in its nearest existing parent, as makedirs would."""
        parent = _nearest_existing(self.directory)
        path = os.path.join(parent, f"{PROBE_PREFIX}{secrets.token_hex(6)}")
        try:
            os.mkdir(path, 0o700)
            os.rmdir(path)
        except OSError as exc:
            raise self._cannot_create(exc) from None

    def _cannot_create(self, exc: OSError) -> ConfigError:
        return ConfigError(f"file backend: cannot create Directory {self.directory!r}: {exc.strerror}")

    def free_space(self) -> FreeSpace | None:
        path = _nearest_existing(self.directory)
        try:
            st = os.statvfs(path)
        except OSError:
            return None
        return FreeSpace(path=os.path.realpath(path), bytes=st.f_bavail * st.f_frsize, files=st.f_favail if st.f_files else None)

    def where(self) -> str:
        return f"file {os.path.realpath(self.directory)}"

    def sync(self) -> None:
        _syncfs(self.directory)

    def free_bytes(self) -> int | None:
        try:
            st = os.statvfs(self.directory)
        except OSError:
            return None
        return st.f_bavail * st.f_frsize

    # -- blobs -------------------------------------------------------------
    def _existing(self, ref: BlobRef) -> tuple[str, os.stat_result]:
        """Path of the stored blob, current layout first; BlobNotFound when neither holds it."""
        current = self.key(ref)
        if ref.upload_id:
            check_id(ref.upload_id, what="upload id")  # refused whichever layout holds the blob
        for path in (current, None) if ref.upload_id else (current,):
            if path is None:
                path = self.legacy_key(ref)  # built only when the current layout has no blob
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue
            except NotADirectoryError:
                continue
            except OSError as exc:
                raise ItemError(f"cannot read {path}: {exc.strerror}", item=ref.file_id) from None
            if stat_mod.S_ISDIR(st.st_mode):
                if path == current:
                    continue  # plikd looks further when the current path is a directory
                raise ItemError(f"{path} is a directory, not a blob", item=ref.file_id, kind=Kind.NOT_A_FILE)
            return path, st
        raise BlobNotFound(f"no blob for file {ref.file_id} in {self.directory}", item=ref.file_id)

    def open_read(self, ref: BlobRef) -> BinaryIO:
        for _ in range(2):  # the blob may move between stat and open (a concurrent write); look again once
            path, st = self._existing(ref)
            _refuse_unless_regular(st, path, ref)  # before opening: opening some devices acts on them
            try:
                fd = _open_for_reading(path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise ItemError(f"cannot read {path}: {exc.strerror}", item=ref.file_id) from None
            try:
                st = os.fstat(fd)  # what was opened, which may not be what stat saw
                _refuse_unless_regular(st, path, ref)
                if not self.follow_outside:
                    self._refuse_outside(fd, st, path, ref)
                if st.st_size < BUFFER:
                    # Read straight into the caller's buffer: io.open would add a buffer, an
                    # fstat and an lseek to each of thousands of small files.
                    return _SmallBlob(fd)
                f = open(fd, "rb", buffering=BUFFER)
            except BaseException:
                os.close(fd)
                raise
            if _fadvise is not None:
                try:
                    _fadvise(f.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)  # a larger read-ahead window
                except OSError:
                    pass
            return f
        raise BlobNotFound(f"no blob for file {ref.file_id} in {self.directory}", item=ref.file_id)

    def _refuse_outside(self, fd: int, st: os.stat_result, path: str, ref: BlobRef) -> None:
        """ItemError unless the opened file lies under Directory once every symlink is resolved.

        The opened descriptor is what is checked (through /proc/self/fd), so a
        symlink swapped in after the check cannot lead the read elsewhere.
        """
        if self._root is None:
            self._root = os.path.realpath(self.directory)
        real = _opened_path(fd)
        if real is None:  # no /proc: resolve the name, and make sure it names the very file opened
            real = os.path.realpath(path)
            try:
                same = os.path.samestat(os.stat(real), st)
            except OSError:
                same = False
            if not same:
                raise ItemError(f"{path} changed while it was opened: not read", item=ref.file_id)
        root = self._root.rstrip(os.sep) + os.sep
        if not real.startswith(root):
            raise ItemError(
                f"{path} leads to {shown(real)}, outside {self.directory}: not read "
                "(pass --follow-outside-symlinks if the deployment links there on purpose)",
                item=ref.file_id,
                kind=Kind.SYMLINK_OUTSIDE,
            )

    def stat(self, ref: BlobRef) -> BlobStat | None:
        try:
            return BlobStat(size=self._existing(ref)[1].st_size)
        except (BlobNotFound, FileNotFoundError):
            return None

    def check_read(self, ref: BlobRef) -> BlobStat | None:
        """Opened as a copy opens it, so a blob this user may not read, or that is no regular file, is found."""
        try:
            f = self.open_read(ref)
        except BlobNotFound:
            return None
        with f:
            return BlobStat(size=os.fstat(f.fileno()).st_size)

    def write(self, ref: BlobRef, src: BinaryIO) -> None:
        self._store(ref, lambda fd: self._copy_into(src, fd, hint=ref.size))

    def write_bytes(self, ref: BlobRef, data: Any) -> None:
        """write() of a blob already in memory (a small one, read whole): one write, no reader."""
        self._store(ref, lambda fd: _write_all(fd, data))

    def _store(self, ref: BlobRef, fill: Any) -> None:
        """A temporary file filled by ``fill(fd)`` (bytes written), renamed to the blob's name."""
        fid = check_id(ref.file_id, what="file id")
        folder = self._prefix + fid[:2]
        final = f"{folder}{os.sep}{fid}"
        try:
            temp, fd = self._create_temp(folder, fid)
        except FileNotFoundError:
            # The folder is missing: made now, once (a folder another worker made costs no mkdir here).
            try:
                os.makedirs(folder, 0o777, exist_ok=True)
            except OSError as exc:
                raise _write_error(exc, folder, ref, verb="create") from None
            try:
                temp, fd = self._create_temp(folder, fid)
            except OSError as exc:
                raise _write_error(exc, folder, ref, verb="create a file in") from None
        except OSError as exc:
            raise _write_error(exc, folder, ref, verb="create a file in") from None
        try:
            try:
                written = fill(fd)
            finally:
                os.close(fd)
            if ref.size >= 0 and written != ref.size:
                raise size_error(item=ref.file_id, expected=ref.size, got=written)
            os.replace(temp, final)
        except BaseException as exc:
            try:
                os.unlink(temp)
            except OSError:
                pass
            if isinstance(exc, OSError):
                raise _write_error(exc, final, ref) from None
            raise

    def _create_temp(self, folder: str, fid: str) -> tuple[str, int]:
        """A new temporary file `.{id}.partial-<tag><n>` next to the blob's final name.

        The tag is random once per backend, the counter is not: no random
        bytes to fetch per blob. O_EXCL still refuses a name that exists (a
        forked copy of this backend with the same tag): a new tag is drawn then.
        """
        for _ in range(3):
            if not self._tag:
                self._tag = secrets.token_hex(6)
            temp = f"{folder}{os.sep}.{fid}{PARTIAL}{self._tag}{next(self._serial):x}"
            try:
                return temp, os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
            except FileExistsError:
                self._tag = ""
        raise FileExistsError(errno.EEXIST, "temporary names taken", folder)

    def _copy_into(self, src: BinaryIO, fd: int, *, hint: int) -> int:
        """Copy src into fd through one reused buffer (allocating and zeroing a buffer per small file is slow)."""
        if 0 <= hint < SMALL - 1:
            buf, self._small = self._small or bytearray(SMALL), None  # the whole blob and its EOF in one read
        else:
            buf, self._buffer = self._buffer or bytearray(BUFFER), None  # never shared by two threads
        view = memoryview(buf)
        total = 0
        try:
            for piece in pieces(src, view):
                chunk = memoryview(piece)
                total += len(chunk)
                while chunk:
                    chunk = chunk[os.write(fd, chunk) :]
        finally:
            chunk = None
            view.release()
            if len(buf) == BUFFER:
                self._buffer = buf
            elif len(buf) == SMALL:
                self._small = buf
        return total

    def discard_partial(self, ref: BlobRef) -> None:
        folder = os.path.dirname(self.key(ref))
        start = f".{ref.file_id}{PARTIAL}"
        for entry in _scandir(folder):
            if entry.name.startswith(start) and entry.is_file(follow_symlinks=False):
                try:
                    os.unlink(entry.path)
                except FileNotFoundError:
                    pass

    def delete(self, ref: BlobRef) -> None:
        for path in self.candidate_keys(ref):
            try:
                if not os.path.isdir(path):
                    os.unlink(path)
            except (FileNotFoundError, NotADirectoryError):
                pass
            except OSError as exc:
                raise ItemError(f"cannot delete {path}: {exc.strerror}", item=ref.file_id) from None

    def list_blobs(self) -> Iterator[tuple[str, int]]:
        """Both layouts: `xx/{id}` files and `xx/{upload id}/{id}` files; temporary names skipped."""
        for first in _scandir(self.directory):
            if not first.is_dir(follow_symlinks=False):
                continue
            for second in _scandir(first.path):
                if second.name.startswith("."):
                    continue
                if second.is_file(follow_symlinks=False):
                    yield second.path, second.stat(follow_symlinks=False).st_size
                elif second.is_dir(follow_symlinks=False):
                    for third in _scandir(second.path):
                        if not third.name.startswith(".") and third.is_file(follow_symlinks=False):
                            yield third.path, third.stat(follow_symlinks=False).st_size

    def read_marker(self) -> bytes | None:
        try:
            with open(os.path.join(self.directory, OWNER_MARKER), "rb") as f:
                return f.read()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise ConfigError(f"file backend: cannot read {os.path.join(self.directory, OWNER_MARKER)}: {exc.strerror}") from None

    def write_marker(self, data: bytes) -> None:
        """Written once per target, so fsynced at once (file, then folder), unlike blobs."""
        final = os.path.join(self.directory, OWNER_MARKER)
        tmp = f"{final}{PARTIAL}{secrets.token_hex(4)}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, final)
            dfd = os.open(self.directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise FatalError(f"cannot write {final}: {exc.strerror}") from None


class _SmallBlob(io.RawIOBase):
    """An open blob below BUFFER: reads go straight from its descriptor into the caller's buffer."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        return os.readv(self._fd, [buf])

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        if not self.closed:
            try:
                os.close(self._fd)
            finally:
                super().close()


def _write_all(fd: int, data: Any) -> int:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    return len(data)


def _nearest_existing(path: str) -> str:
    """path, or the closest of its parents that exists (the current folder for a relative path)."""
    path = os.path.abspath(path)
    while not os.path.lexists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def _refuse_unless_regular(st: os.stat_result, path: str, ref: BlobRef) -> None:
    if not stat_mod.S_ISREG(st.st_mode):
        what = _KINDS.get(stat_mod.S_IFMT(st.st_mode), "not a regular file")
        raise ItemError(f"{path} is {what}, not a regular file: not read", item=ref.file_id, kind=Kind.NOT_A_FILE)


def _open_for_reading(path: str) -> int:
    try:
        return os.open(path, _READ_FLAGS)
    except BlockingIOError:
        # A lease (Samba, NFS server) on a regular file: without O_NONBLOCK the
        # open waits for its holder to let go, as every other reader does.
        return os.open(path, _READ_FLAGS & ~os.O_NONBLOCK)


_proc_fd = os.path.isdir("/proc/self/fd")


def _opened_path(fd: int) -> str | None:
    """The path the kernel holds for an open descriptor, symlinks resolved; None without /proc."""
    if not _proc_fd:
        return None
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


def _scandir(path: str) -> list[os.DirEntry]:
    try:
        with os.scandir(path) as it:
            return sorted(it, key=lambda e: e.name)
    except FileNotFoundError:
        return []


# Errors that every further write would meet too: they stop the run (StoreError).
_STORE_ERRNOS = {errno.ENOSPC: FULL, errno.EDQUOT: QUOTA, errno.EROFS: READ_ONLY, errno.EACCES: PERMISSION, errno.EPERM: PERMISSION}


def _write_error(exc: OSError, path: str, ref: BlobRef, *, verb: str = "write") -> Exception:
    """A full or read-only disk, or a directory this user may not write, stops the run; anything else fails this blob."""
    message = f"cannot {verb} {path}: {exc.strerror}"
    cause = _STORE_ERRNOS.get(exc.errno or 0)
    if cause is not None:
        return StoreError(cause, message)
    return ItemError(message, item=ref.file_id)


def _sync_error(directory: str, err: int) -> FatalError:
    """Blobs written since the last sync may not be durable: the run stops, their journal rows unwritten."""
    message = f"cannot sync {directory}: {os.strerror(err)}"
    cause = _STORE_ERRNOS.get(err)
    return StoreError(cause, message) if cause is not None else FatalError(message)


def _read_only(directory: str) -> bool:
    try:
        return bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _user() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError):
        return str(os.geteuid())


_libc_syncfs: Any = None


def _syncfs(directory: str) -> None:
    """Flush the filesystem holding directory: syncfs(2) through libc (Python has no os.syncfs), else sync(2)."""
    global _libc_syncfs
    if _libc_syncfs is None:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
            _libc_syncfs = getattr(libc, "syncfs", False)
        except OSError:
            _libc_syncfs = False
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError as exc:
        raise _sync_error(directory, exc.errno or 0) from None
    try:
        if not _libc_syncfs:
            os.sync()
        elif _libc_syncfs(fd) != 0:
            raise _sync_error(directory, ctypes.get_errno())
    finally:
        os.close(fd)


SPEC = BackendSpec(name="file", factory=FileBackend, options=OPTIONS, describe=describe_options, location=location)
