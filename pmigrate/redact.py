"""The one place that hides secrets from anything pmigrate shows.

Every secret that config loading meets (passwords in connection strings, S3
secret keys, SSE-C keys, Swift API keys) is registered here; every line that
leaves the process (stdout, stderr, logs, JSON report) goes through redact().
"""

from __future__ import annotations

import threading
from urllib.parse import quote, quote_plus

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
    with _lock:
        for form in {secret, quote(secret, safe=""), quote_plus(secret), repr(secret)[1:-1]}:
            _secrets.add(form)


def redact(text: str) -> str:
    """Replace every registered secret in text by ***."""
    if not text:
        return text
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for s in secrets:
        if s in text:
            text = text.replace(s, MASK)
    return text


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
