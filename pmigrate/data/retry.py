"""One retry policy for an object store's requests, by class of error, applied in one layer.

Every failed request is of one of four classes. A capability error (501: the
store does not implement the request) and a permanent one (another 4xx: the
request is wrong or refused) are never tried again: asking again cannot help.
A transient error (another 5xx, a timeout, a reset connection) is tried
again after a short exponential backoff with jitter, up to ATTEMPTS tries in
all; past those, only while the store answers nothing at all: an outage,
told apart from this one request failing by a probe (one cheap request, not
tried again). A throttled one (503 SlowDown, 429: the store asks for fewer
requests) backs off longer, and for as long as the time allows: the store is
pacing us, not failing.

The time is ``retry_for`` seconds (--retry-for) from a request's first
failure. Past it the request fails; when the store answers nothing at all
by then, it is taken for unreachable, and every request of this process
fails at once until one is answered again: the run stops with one line, and
the next run resumes from its journal.

The SDK's own retries are off and the worker does not try a blob again on
top, so that a request failing for a transient reason costs at most
ATTEMPTS requests while the store answers, not the product of several
layers' tries.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

TRANSIENT, THROTTLED, CAPABILITY, PERMANENT = "transient", "throttled", "capability", "permanent"
RETRIED = (TRANSIENT, THROTTLED)
ATTEMPTS = 5  # tries of one request while the store answers others
RETRY_FOR = 60.0  # seconds a request is tried again while the store answers nothing (--retry-for)
RETRY_FOR_KEY = "pmigrate.retry_for"  # where --retry-for travels in a store's options (not a plikd key)
WAIT_STEP = 0.1  # seconds between looks at whether the run is stopping, while waiting to try again


@dataclass(frozen=True)
class Backoff:
    first: float  # seconds before the first retry, on average three quarters of it
    most: float  # the longest step

    def delay(self, retry: int, rng: random.Random) -> float:
        """Seconds before retry number ``retry`` (0 first): half the exponential step, plus up to as much again.

        The fixed half keeps a throttled store's breathing space; the random
        half spreads the retries of the requests that failed together.
        """
        step = min(self.most, self.first * 2 ** min(retry, 30))
        return step / 2 + rng.random() * step / 2


BACKOFF = {TRANSIENT: Backoff(0.05, 2.0), THROTTLED: Backoff(0.1, 8.0)}


class RetryPolicy:
    """The retry decisions of one process's requests to one store; its threads share it."""

    def __init__(
        self,
        *,
        attempts: int = ATTEMPTS,
        retry_for: float = RETRY_FOR,
        probe: Callable[[], None] | None = None,
        stopped: Callable[[], bool] = lambda: False,
        clock: Callable[[], float] = time.monotonic,
        seed: int | None = None,
    ) -> None:
        self.attempts = max(1, attempts)
        self.retry_for = retry_for
        self.probe = probe  # one request of its own, not tried again, to see whether the store answers
        self.stopped = stopped  # True once the run is stopping: no more waiting
        self._clock = clock
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._local = threading.local()
        self._answered = -math.inf  # when the store last answered a request
        self.down: float | None = None  # seconds it had answered nothing when taken for unreachable; None while it answers

    @property
    def probing(self) -> bool:
        """True in the thread running the probe: its request is never tried again."""
        return getattr(self._local, "probing", False)

    def now(self) -> float:
        return self._clock()

    def answered(self) -> None:
        """A request got an answer (a success, or an error the store chose to give): the store is up."""
        with self._lock:
            self._answered = self._clock()
            self.down = None

    def after(self, kind: str, *, tries: int, since: float) -> float | None:
        """Seconds to wait before trying again a request that failed ``tries`` times, first at ``since``; None: give up."""
        if kind not in RETRIED or self.probing or self.down is not None:
            return None
        delay = BACKOFF[kind].delay(tries - 1, self._rng)
        if tries < self.attempts:
            return delay
        now = self._clock()
        if kind == THROTTLED and now - since < self.retry_for:
            return min(delay, since + self.retry_for - now)
        if self._answered >= since or self._probe_answers():
            return None  # the store answers: this request's failure is its own
        if now - since >= self.retry_for:
            with self._lock:
                if self._answered < since:
                    self.down = now - since
            return None
        return min(delay, since + self.retry_for - now)

    def _probe_answers(self) -> bool:
        if self.probe is None:
            return False
        before = self._answered
        self._local.probing = True
        try:
            self.probe()
        except Exception:  # noqa: BLE001 - a probe that fails says the store does not answer
            pass
        finally:
            self._local.probing = False
        return self._answered > before

    def wait(self, seconds: float) -> bool:
        """Sleep before the next try; False if the run began to stop meanwhile."""
        end = self._clock() + seconds
        while not self.stopped():
            left = end - self._clock()
            if left <= 0:
                return True
            time.sleep(min(WAIT_STEP, left))
        return False
