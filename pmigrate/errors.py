"""One error taxonomy: the worst class raised or recorded sets the exit code.

Kind names every problem a blob stage reports: the strings are those of the
JSON report (``problems[].kind``, ``errors_by_kind``), kept as they were.
"""

from enum import StrEnum

EXIT_OK = 0
EXIT_FAILED = 1  # the run happened but something failed or did not match
EXIT_USAGE = 2  # bad usage or configuration: nothing was written
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT


class PmigrateError(Exception):
    """Base of every error pmigrate expects; never shown with a traceback."""

    exit_code = EXIT_FAILED


class ConfigError(PmigrateError):
    """Bad input found before anything was written: one line, cause and fix."""

    exit_code = EXIT_USAGE


class StoreAbsent(ConfigError):
    """The directory, bucket or container a data config names does not exist (yet)."""


class FatalError(PmigrateError):
    """The run cannot go on (target unreachable mid-run, disk full, ...)."""

    exit_code = EXIT_FAILED


class StoreError(FatalError):
    """A store refuses every write, not one blob's: full, read-only, no permission, bucket gone.

    Stops the run at once, without retrying blob after blob into the same
    wall. ``cause`` (one of CAUSES) picks the advice; ``side`` is set by the
    worker that met it ("target" or "source").
    """

    def __init__(self, cause: str, message: str, *, side: str = "") -> None:
        super().__init__(message)
        self.cause = cause
        self.side = side


# StoreError causes, as the report's problem kinds spell them after the side: "target-full", ...
FULL = "full"  # no space left (ENOSPC)
QUOTA = "quota"  # the user's disk quota is used up (EDQUOT)
READ_ONLY = "read-only"  # a read-only file system (EROFS)
PERMISSION = "permission"  # permission denied (EACCES, EPERM)
GONE = "gone"  # the bucket or container no longer exists
DENIED = "denied"  # the object store refuses the request (403 AccessDenied)
UNREACHABLE = "unreachable"  # the object store answered nothing for --retry-for (pmigrate.data.retry)
CAUSES = (FULL, QUOTA, READ_ONLY, PERMISSION, GONE, DENIED, UNREACHABLE)


class Kind(StrEnum):
    """What went wrong with one blob (or stopped the run), as the report names it."""

    ERROR = "error"  # nothing more precise is known
    MISSING = "missing"  # absent from the store that should hold it
    SIZE_MISMATCH = "size-mismatch"  # more or fewer bytes than files.size
    READ_ERROR = "read-error"
    WRITE_ERROR = "write-error"
    INVALID_ID = "invalid-id"  # an id that must never become a path or key
    RETRY_EXHAUSTED = "retry-exhausted"
    TRANSIENT = "transient"  # a stream cut short, tried RETRIES times
    UNSUPPORTED = "unsupported"  # a request the store does not implement
    STREAM = "stream"  # the stream backend holds no bytes
    SSE_KEY = "sse-key"  # an SSE-C key missing or refused
    NOT_A_FILE = "not-a-file"  # a directory or device where a blob should be
    SYMLINK_OUTSIDE = "symlink-outside"  # a link out of the source directory, not followed
    WORKER_DIED = "worker-died"
    FATAL = "fatal"
    # warnings of the copy, and outcomes of verify
    MD5_MISMATCH = "md5-mismatch"
    HASH_MISMATCH = "hash-mismatch"
    CORRUPT_SOURCE = "corrupt-source"
    SOURCE_MISSING = "source-missing"
    UNVERIFIABLE = "unverifiable"
    # a StoreError met on one side: store_kind()
    TARGET_FULL = "target-full"
    TARGET_QUOTA = "target-quota"
    TARGET_READ_ONLY = "target-read-only"
    TARGET_PERMISSION = "target-permission"
    TARGET_GONE = "target-gone"
    TARGET_DENIED = "target-denied"
    TARGET_UNREACHABLE = "target-unreachable"
    SOURCE_FULL = "source-full"
    SOURCE_QUOTA = "source-quota"
    SOURCE_READ_ONLY = "source-read-only"
    SOURCE_PERMISSION = "source-permission"
    SOURCE_GONE = "source-gone"
    SOURCE_DENIED = "source-denied"
    SOURCE_UNREACHABLE = "source-unreachable"


def store_kind(side: str, cause: str) -> Kind:
    """The problem kind of a StoreError met on one side."""
    return Kind(f"{side}-{cause}")


STORE_KINDS = frozenset(store_kind(side, c) for side in ("target", "source") for c in CAUSES)
FATAL_KINDS = STORE_KINDS | {Kind.FATAL}  # problem kinds that end a run, --ignore-errors or not


class ItemError(PmigrateError):
    """One row or blob failed; the run may go on with --ignore-errors."""

    retryable = False

    def __init__(self, message: str, *, item: str = "", kind: Kind = Kind.ERROR) -> None:
        super().__init__(message)
        self.item = item
        self.kind = kind


class BlobNotFound(ItemError):
    """The blob a file row promises is absent from a data backend."""

    def __init__(self, message: str, *, item: str = "") -> None:
        super().__init__(message, item=item, kind=Kind.MISSING)


class InvalidId(ItemError):
    """An id from the metadata that must never become a path or key."""

    def __init__(self, message: str, *, item: str = "") -> None:
        super().__init__(message, item=item, kind=Kind.INVALID_ID)


class RetryableError(ItemError):
    """A failure worth writing the blob again for: the worker tries it again.

    Raised by backends whose SDK does not retry a stream cut short, and by
    S3 when an upload ended under it (its completion's answer lost). S3's
    failed requests are retried by the backend itself (RetriesExhausted).
    """

    retryable = True


class RetriesExhausted(ItemError):
    """A transient failure that the backend's own retry policy tried again until it gave up (pmigrate.data.retry).

    Not a RetryableError: nothing above the backend tries it again.
    """

    def __init__(self, message: str, *, item: str = "") -> None:
        super().__init__(message, item=item, kind=Kind.RETRY_EXHAUSTED)


class Unsupported(ItemError):
    """The store refuses a kind of request as not implemented (501) or not allowed: asking again cannot help.

    Never retried; the caller takes another way when there is one (a refused
    server-side copy is streamed instead).
    """

    def __init__(self, message: str, *, item: str = "") -> None:
        super().__init__(message, item=item, kind=Kind.UNSUPPORTED)


class Cancelled(Exception):
    """The run is stopping (or the parent died): a worker abandons its blob."""
