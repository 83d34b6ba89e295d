"""S3's answers in the retry policy's classes (pmigrate.data.retry), and the policy in botocore's request loop.

botocore's own retries are turned off (one attempt); its request loop still
asks the ``needs-retry`` event after every attempt whether to try again, and
this module's handler answers from the policy. botocore then signs and sends
the request again, with its body rewound: the retry happens below
s3transfer and the backend, one request at a time.
"""

from __future__ import annotations

import builtins
from functools import partial
from typing import Any

from pmigrate.data.retry import CAPABILITY, PERMANENT, THROTTLED, TRANSIENT, RetryPolicy

# Codes AWS and botocore's standard mode take for "fewer requests, please"
_THROTTLED = {
    "SlowDown", "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
    "TooManyRequestsException", "RequestLimitExceeded", "BandwidthLimitExceeded", "RequestThrottled",
    "LimitExceededException", "PriorRequestNotComplete",
}  # fmt: skip
# Errors S3 answers with a 4xx that a second try may not meet (400 RequestTimeout: the body came too slowly)
_TRANSIENT = {"RequestTimeout", "RequestTimeoutException", "InternalError"}
_SINCE = "pmigrate_failing_since"  # in botocore's per-call context: when this call's first attempt failed


def kind(status: int, code: str = "") -> str | None:
    """The class of an S3 answer (status, error code); None for a success."""
    if status < 300 and not code:
        return None
    if code in _THROTTLED or status in (429, 503):  # 503: SlowDown, ServiceUnavailable ("reduce your request rate")
        return THROTTLED
    if status == 501 or code == "NotImplemented":
        return CAPABILITY
    if status >= 500 or code in _TRANSIENT:
        return TRANSIENT
    return PERMANENT


def error_kind(exc: BaseException) -> str | None:
    """The class of an exception from botocore; None for one that is no store's answer nor transport failure."""
    from botocore.exceptions import (
        ClientError,
        HTTPClientError,
        IncompleteReadError,
    )
    from botocore.exceptions import (
        ConnectionError as BotoConnectionError,
    )

    if isinstance(exc, ClientError):
        meta = exc.response.get("ResponseMetadata", {})
        return kind(int(meta.get("HTTPStatusCode") or 500), str(exc.response.get("Error", {}).get("Code", "")))
    if isinstance(exc, (BotoConnectionError, HTTPClientError, IncompleteReadError, builtins.ConnectionError, TimeoutError)):
        return TRANSIENT  # reset, refused, timed out, cut short
    try:
        from urllib3.exceptions import HTTPError as Urllib3Error
    except ImportError:  # pragma: no cover - botocore depends on urllib3
        return None
    return TRANSIENT if isinstance(exc, Urllib3Error) else None


def install(client: Any, policy: RetryPolicy) -> None:
    """Have every request of client retried by policy (botocore's own retries must be off)."""
    client.meta.events.register("needs-retry.s3", partial(_needs_retry, policy))


def _needs_retry(
    policy: RetryPolicy,
    response: Any = None,
    caught_exception: BaseException | None = None,
    attempts: int = 1,
    request_dict: Any = None,
    **_: Any,
) -> float | None:
    """botocore's question after each attempt: None to stop there, else seconds to sleep before the next (0: we slept)."""
    if caught_exception is not None:
        k = error_kind(caught_exception)
    else:
        http, parsed = response
        code = str((parsed or {}).get("Error", {}).get("Code", "")) if http.status_code >= 300 else ""
        k = kind(http.status_code, code)
    if k in (CAPABILITY, PERMANENT) or (k is None and caught_exception is None):
        policy.answered()  # a success, or an error the store chose to answer with: it is up
        return None
    if k is None:
        return None  # not the store's doing (a bug, a bad parameter): nothing to retry
    context = request_dict.setdefault("context", {}) if isinstance(request_dict, dict) else {}
    since = context.setdefault(_SINCE, policy.now())
    delay = policy.after(k, tries=attempts, since=since)
    if delay is None or not policy.wait(delay):
        return None
    return 0
