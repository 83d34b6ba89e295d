"""One error taxonomy: the worst class raised or recorded sets the exit code."""

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


class FatalError(PmigrateError):
    """The run cannot go on (target unreachable mid-run, disk full, ...)."""

    exit_code = EXIT_FAILED


class ItemError(PmigrateError):
    """One row or blob failed; the run may go on with --ignore-errors."""

    retryable = False

    def __init__(self, message: str, *, item: str = "", kind: str = "error") -> None:
        super().__init__(message)
        self.item = item
        self.kind = kind


class BlobNotFound(ItemError):
    """The blob a file row promises is absent from a data backend."""

    def __init__(self, message: str, *, item: str = "") -> None:
        super().__init__(message, item=item, kind="missing")


class InvalidId(ItemError):
    """An id from the metadata that must never become a path or key."""

    def __init__(self, message: str, *, item: str = "") -> None:
        super().__init__(message, item=item, kind="invalid-id")


class RetryableError(ItemError):
    """A transient failure (timeout, 5xx, reset connection): worth another try."""

    retryable = True


class Unsupported(ItemError):
    """The store refuses a kind of request as not implemented (501) or not allowed: asking again cannot help.

    Never retried; the caller takes another way when there is one (a refused
    server-side copy is streamed instead).
    """

    def __init__(self, message: str, *, item: str = "") -> None:
        super().__init__(message, item=item, kind="unsupported")


class Cancelled(Exception):
    """The run is stopping (or the parent died): a worker abandons its blob."""
