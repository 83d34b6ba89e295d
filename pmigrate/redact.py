"""The one place that hides secrets from anything pmigrate shows.

Every secret that config loading meets (passwords in connection strings, S3
secret keys, SSE-C keys, Swift API keys) is registered here; every line that
leaves the process (stdout, stderr, logs, JSON report) goes through redact().
"""

from __future__ import annotations

import json
import logging
import re
import threading
from urllib.parse import quote, quote_plus

from pmigrate.quote import lines

MASK = "***"
_lock = threading.Lock()
_secrets: set[str] = set()

# Config keys whose values are secrets, whatever the backend.
SECRET_KEYS = frozenset(
    k.lower()
    for k in (
        "SecretAccessKey",
        "ApiKey",
        "Password",
        "SSEKey",
        "SSECustomerKey",
        "Token",
        "AuthToken",
        "ApplicationCredentialSecret",
        "Key",
        "Secret",
    )
)


def register(secret: str | None) -> None:
    """Remember a secret (and its URL-quoted forms) so redact() hides it."""
    if not secret or len(secret) < 3:
        # A secret this short would mask ordinary text; it is never printed by
        # pmigrate on purpose, so the remaining risk is accepted.
        return
    forms = {
        secret,
        quote(secret, safe=""),
        quote(secret, safe=" "),
        quote(secret, safe=" +"),  # SQLAlchemy's URL.render_as_string(hide_password=False)
        quote_plus(secret),
        repr(secret)[1:-1],
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
    }
    with _lock:
        _secrets.update(f for f in forms if len(f) >= 3)


# Secrets that were never registered (SSE-C keys in files.backend_details,
# credentials in a URL or DSN met in a driver's message): masked by shape.
_KEY_NAMES = (
    r"SSEKey|SSECustomerKey|sse_?customer_?key|x-amz-server-side-encryption-customer-key(?:-md5)?"
    r"|x-amz-copy-source-server-side-encryption-customer-key(?:-md5)?"
    r"|SecretAccessKey|secret_?access_?key|aws_secret_access_key|ApiKey|api_?key|AuthToken|X-Auth-Token"
    r"|ApplicationCredentialSecret|password|passwd|pwd|sslpassword|_auth_pass"
)
_QUOTED_VALUE = re.compile(
    rf"""(?i)(["']?\b(?:{_KEY_NAMES})["']?\s*[:=]\s*)("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')"""
)
_BARE_VALUE = re.compile(rf"""(?i)(\b(?:{_KEY_NAMES})\s*=\s*)([^\s,;&'")}}\]]+)""")
_URL_USERINFO = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^/\s:@]*:)([^@\s/]+)(@)")
_GO_MYSQL_DSN = re.compile(r"([^\s:/@()]+:)([^@\s]+)(@(?:tcp|unix)?\()")


def _mask_quoted(m: re.Match[str]) -> str:
    q = m.group(2)[0]
    return f"{m.group(1)}{q}{MASK}{q}"


def _by_shape(text: str) -> str:
    text = _QUOTED_VALUE.sub(_mask_quoted, text)
    text = _BARE_VALUE.sub(lambda m: m.group(1) + MASK, text)
    text = _URL_USERINFO.sub(lambda m: m.group(1) + MASK + m.group(3), text)
    return _GO_MYSQL_DSN.sub(lambda m: m.group(1) + MASK + m.group(3), text)


def redact(text: str) -> str:
    """Replace every registered secret in text by ***."""
    if not text:
        return text
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for s in secrets:
        if s in text:
            text = text.replace(s, MASK)
    return _by_shape(text)


def redact_mapping(value: object) -> object:
    """A copy of a config-like structure with secret keys masked and strings redacted."""
    if isinstance(value, dict):
        return {
            k: (MASK if isinstance(k, str) and k.lower() in SECRET_KEYS and v else redact_mapping(v))
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [redact_mapping(v) for v in value]
    if isinstance(value, str):
        return redact(value)
    return value


def registered() -> tuple[str, ...]:
    """Every registered form, to hand to a worker process (spawned children start empty)."""
    with _lock:
        return tuple(_secrets)


class _RedactingStream:
    """A text stream that redacts what is written through it (a child's stderr), in printable lines."""

    def __init__(self, raw) -> None:  # any text stream
        self._raw = raw

    def write(self, text: str) -> int:
        self._raw.write(lines(redact(text)))
        return len(text)

    def __getattr__(self, name: str):  # delegate flush, fileno, ...
        return getattr(self._raw, name)


class LogFormatter(logging.Formatter):
    """One prefix for every logged line ('pmigrate: warning: ...'), redacted, tracebacks included, each line printable."""

    def format(self, record: logging.LogRecord) -> str:
        record = logging.makeLogRecord(record.__dict__)
        record.levelname = record.levelname.lower()
        return lines(redact(super().format(record)))


# Libraries whose debug logs (every event handler, every request signed) would bury pmigrate's own steps.
# psycopg warns of a COPY it could not end on a lost connection: the run's own error names the loss.
NOISY = ("botocore", "boto3", "s3transfer", "urllib3", "google", "swiftclient", "psycopg")


def quiet_libraries(*, verbose: bool) -> None:
    """Their warnings and (with -v) their info lines only: set in the parent and in every worker."""
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.ERROR)


def init_child(secrets: tuple[str, ...], *, verbose: bool = False) -> None:
    """In a worker process: know the parent's secrets, and redact its logs and stderr.

    A spawned or forkserver child starts with no registered secret and no log
    handler, and multiprocessing prints an uncaught exception's traceback to
    stderr: both must be redacted as in the parent.
    """
    import sys

    with _lock:
        _secrets.update(secrets)
    if not isinstance(sys.stderr, _RedactingStream):
        sys.stderr = _RedactingStream(sys.stderr)
    handler = logging.StreamHandler(sys.stderr)  # already redacting
    handler.setFormatter(LogFormatter("pmigrate: %(levelname)s: worker %(process)d: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)
    quiet_libraries(verbose=verbose)
    logging.captureWarnings(True)
