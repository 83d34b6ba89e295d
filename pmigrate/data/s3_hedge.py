"""A request whose attempt waits too long for its answer goes out again, on another connection.

A worker copies one blob at a time, so one request the store holds (a stalled
connection, a slow disk behind one of its servers) idles the whole worker
until the read timeout cuts it: with many small blobs, those waits are most
of what faults cost. For the requests a blob's copy waits on alone (a small
PutObject, the GetObject and HeadObject of a read) the remedy is a hedge:
once an attempt has waited for its answer much longer than answers take, the
same request goes out again beside it and the first success wins. The other
is abandoned: not tried again, and its body, if any, closed.

The wait before hedging follows this process's own answer times
(HEDGE_FACTOR times their median, at least HEDGE_MIN), so a slow store is
hedged no more often than a fast one. An attempt waiting out a backoff (the
store asked for fewer requests) is not waiting for an answer and is never
hedged. A request is hedged once at most, and a PutObject only with a small
body (both copies hold it in memory). The same bytes written twice under
one key leave the same object; the copy that loses may still reach the
store, as a request cut by a timeout may.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

HEDGED = {"put_object": "PutObject", "get_object": "GetObject", "head_object": "HeadObject"}  # idempotent
HEDGE_MIN = 0.2  # seconds an attempt waits for its answer, at least, before it is hedged
HEDGE_FACTOR = 4  # times the median answer time
SAMPLES = 64  # answer times remembered
LEARN = 8  # answer times seen before any hedge: until then only the read timeout cuts
POLL = 0.05  # seconds between looks at a request waiting out a backoff


class _Call:
    __slots__ = ("future", "sent", "abandoned")

    def __init__(self) -> None:
        self.future: Future | None = None
        self.sent: float | None = None  # when its current attempt went out; None between attempts
        self.abandoned = False  # the other copy won: no more tries


class Hedger:
    """Hedged calls of one client, for one process; safe to share between its threads."""

    def __init__(self, client: Any, *, longest: float) -> None:
        self._client = client
        self._longest = longest  # no hedge later than this (the read timeout): it cuts the attempt anyway
        self._times: deque[float] = deque(maxlen=SAMPLES)
        self._lock = threading.Lock()  # over _times: every thread's answers land there
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="pmigrate-hedge")
        self.hedged = 0  # requests sent a second time
        events = client.meta.events
        for operation in HEDGED.values():
            # More specific than the retry policy's "needs-retry.s3": called first, before it sleeps a backoff.
            events.register(f"before-send.s3.{operation}", self._sending)
            events.register(f"needs-retry.s3.{operation}", self._done)

    def call(self, method: str, **kwargs: Any) -> Any:
        """client.<method>(**kwargs) (one of HEDGED), hedged once if its attempt waits too long for an answer."""
        calls = [self._start(method, kwargs)]
        while True:
            for call in calls:
                if call.future.done() and call.future.exception() is None:
                    for other in calls:
                        if other is not call:
                            other.abandoned = True
                            other.future.add_done_callback(_discard)
                    return call.future.result()
            pending = [c.future for c in calls if not c.future.done()]
            if not pending:
                raise calls[0].future.exception()
            timeout = None
            if len(calls) == 1:
                sent, after = calls[0].sent, self.after()
                if sent is None:
                    timeout = POLL
                elif time.monotonic() - sent >= after:
                    self.hedged += 1
                    calls.append(self._start(method, kwargs))
                    continue
                else:
                    timeout = sent + after - time.monotonic()
            wait(pending, timeout=timeout, return_when=FIRST_COMPLETED)

    def after(self) -> float:
        """Seconds an attempt may wait for its answer before it is hedged."""
        with self._lock:
            if len(self._times) < LEARN:
                return self._longest
            median = statistics.median(self._times)
        return min(self._longest, max(HEDGE_MIN, HEDGE_FACTOR * median))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _start(self, method: str, kwargs: dict[str, Any]) -> _Call:
        call = _Call()
        call.future = self._pool.submit(self._run, call, method, kwargs)
        return call

    def _run(self, call: _Call, method: str, kwargs: dict[str, Any]) -> Any:
        self._local.call = call
        try:
            return getattr(self._client, method)(**kwargs)
        finally:
            self._local.call = None

    def _sending(self, **_: Any) -> None:
        call = getattr(self._local, "call", None)
        if call is not None:
            call.sent = time.monotonic()

    def _done(self, response: Any = None, **_: Any) -> bool | None:
        """After each attempt: its answer time noted; False (no retry) once the call is abandoned."""
        call = getattr(self._local, "call", None)
        if call is None:
            return None
        if response is not None and call.sent is not None:  # an answer, not a timeout or a reset
            with self._lock:
                self._times.append(time.monotonic() - call.sent)
        call.sent = None
        return False if call.abandoned else None


def _discard(future: Future) -> None:
    """The losing copy's result: a body it holds goes back, closed."""
    if future.cancelled() or future.exception() is not None:
        return
    result = future.result()
    body = result.get("Body") if isinstance(result, dict) else None
    if body is not None:
        body.close()
