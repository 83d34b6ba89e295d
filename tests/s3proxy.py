"""A fault-injecting HTTP reverse proxy for the tests, in front of a real server (moto) on its own loopback port.

Real object stores refuse what they do not implement, throttle, cut
connections, stall and go down for a while; moto does none of it. The proxy
forwards every request to the server unchanged (Host included, so SigV4
signatures still hold) and lets a test choose requests to treat otherwise.
Rules are tried in order; the first that matches a request, and is still in
force, acts on it:

- ``respond``: answer with a status and body of its own; the server never sees the request
- ``reset-before``: reset the connection (TCP RST) without forwarding
- ``reset-after``: forward, let the server act, then reset instead of answering
- ``stall``: hold the request ``seconds``, then forward it
- ``cut``: forward, then answer with the server's status and headers and only
  half its body before resetting: a download cut short
- ``forward``: forward it (with ``first``: after running that once)
- ``random``: one of ``kinds`` drawn uniformly: 500 InternalError, 503 SlowDown,
  reset-before, reset-after or a stall (``random_faults``, ``outage``)

A rule matches on method (a regular expression, fully matched), a regular
expression searched in the path with its query string, and a header (present,
or whose value matches a regular expression). When it is in force: ``times``
bounds how many requests it acts on; ``rate`` acts on that share of the
matching requests (drawn from a generator seeded by the rule's ``seed``, else
the proxy's); ``after`` holds it back until that many matching requests were
answered with a 2xx; ``lasts`` ends it that many seconds after it first
acted. A ``serial`` rule's matching requests are handled one at a time, so
that none slips past its ``after`` count. A request no rule takes is
forwarded as is. Every request is logged with its headers, its arrival
time, the action taken and the status answered (0: none, the connection was
reset).

Threads of the test process serve it: ``start_proxy`` starts one, ``stop``
shuts it down and joins its thread (stalls end at once).
"""

from __future__ import annotations

import http.client
import http.server
import random
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

RESPOND, RESET_BEFORE, RESET_AFTER, STALL, CUT = "respond", "reset-before", "reset-after", "stall", "cut"
FORWARD, RANDOM = "forward", "random"
FAULTS = (500, 503, RESET_BEFORE, RESET_AFTER, STALL)  # what a RANDOM rule draws from, by default
DOWN = (500, 503, RESET_BEFORE)  # a store that is down: every request fails, none reaches it
_ERRORS = {500: "InternalError", 503: "SlowDown"}
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "expect"}

# The requests that store a blob: an object PUT (not a part) or the start of a multipart upload,
# pmigrate's ownership record and write probe aside. Splat into a Rule or Proxy.requests.
BLOB_WRITES = {"method": "PUT|POST", "path": r"^/[^/?]+/(?![^?]*\.pmigrate-(?:owner\.json|probe-))[^?]+(\?uploads)?$"}


@dataclass
class Rule:
    action: str  # RESPOND | RESET_BEFORE | RESET_AFTER | STALL | CUT | FORWARD | RANDOM
    method: str | None = None  # regex, fully matched: "PUT", "PUT|POST"
    path: str | None = None  # regex searched in "/bucket/key?query"
    header: str | None = None  # the request must carry this header ...
    header_value: str | None = None  # ... with a value matching this regex, if given
    status: int = 500
    body: bytes = b""
    content_type: str = "application/xml"
    seconds: float = 0.0  # of a stall
    times: int | None = None  # requests it acts on; None: every matching one
    rate: float = 1.0
    after: int = 0  # matching requests answered 2xx before it acts
    lasts: float | None = None  # seconds in force from its first act; None: for good
    serial: bool = False
    first: Callable[[], None] | None = None  # run once before its first act (not through the proxy)
    kinds: tuple = FAULTS  # what RANDOM draws from
    seed: int | None = None  # its own generator for rate and kinds; None: the proxy's
    hits: int = 0  # requests it acted on so far
    passed: int = 0  # matching requests answered 2xx while it held back (after)
    started: float | None = None  # monotonic time of its first act
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed) if self.seed is not None else None

    def matches(self, method: str, path: str, headers: http.client.HTTPMessage) -> bool:
        if self.method is not None and not re.fullmatch(self.method, method):
            return False
        if self.path is not None and not re.search(self.path, path):
            return False
        if self.header is not None:
            value = headers.get(self.header)
            if value is None or (self.header_value is not None and not re.search(self.header_value, value)):
                return False
        return True

    def over(self, now: float) -> bool:
        if self.times is not None and self.hits >= self.times:
            return True
        return self.lasts is not None and self.started is not None and now - self.started >= self.lasts


def s3_error(status: int, code: str, message: str = "", **match) -> Rule:
    """A rule answering with an S3 error document, as a store that refuses the request would."""
    return Rule(RESPOND, status=status, body=_error_body(code, message), **match)


def random_faults(rate: float, *, seed: int, seconds: float = 5.0, kinds: tuple = FAULTS, **match) -> Rule:
    """That share of the requests fails, each with one of ``kinds`` drawn uniformly (a stall lasts ``seconds``)."""
    return Rule(RANDOM, rate=rate, seed=seed, seconds=seconds, kinds=kinds, **match)


def outage(seconds: float, *, after: int = 0, seed: int = 0, kinds: tuple = DOWN, **match) -> Rule:
    """Every request fails for ``seconds``: from the first one on, or once ``after`` were answered."""
    return Rule(RANDOM, lasts=seconds, after=after, seed=seed, kinds=kinds, **match)


def _error_body(code: str, message: str = "") -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{escape(code)}</Code><Message>{escape(message or code)}</Message>"
        "<RequestId>pmigrate-test-proxy</RequestId></Error>"
    ).encode()


@dataclass
class Logged:
    method: str
    path: str
    action: str  # "forward" or the action taken (a RANDOM rule's as drawn)
    headers: dict[str, str] = field(default_factory=dict)  # the request's, names in lower case
    at: float = 0.0  # monotonic time it arrived
    status: int = 0  # answered; 0 while unanswered, or when the connection was reset


@dataclass(frozen=True)
class _Act:
    """What to do with one request, as a rule decided it."""

    action: str
    status: int = 0
    body: bytes = b""
    content_type: str = "application/xml"
    seconds: float = 0.0
    first: Callable[[], None] | None = None


@dataclass
class Proxy:
    upstream: str  # http://host:port
    rules: list[Rule] = field(default_factory=list)
    log: list[Logged] = field(default_factory=list)
    seed: int = 0
    port: int = 0
    s3: Any = None  # the S3Server configs point at to go through the proxy (set by the s3_proxy fixture)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _server: _Server | None = None
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    @property
    def endpoint(self) -> str:
        """host:port, as plikd's Endpoint."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    def add(self, rule: Rule) -> Rule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()

    def acted(self, action: str | None = None) -> list[Logged]:
        """Requests some rule acted on (of one action, if given)."""
        with self._lock:
            return [e for e in self.log if e.action != FORWARD and (action is None or e.action == action)]

    def requests(self, method: str | None = None, path: str | None = None) -> list[Logged]:
        """Every request logged so far, or those matching method (fully) and path (searched), as rules match."""
        with self._lock:
            log = list(self.log)
        return [e for e in log if (method is None or re.fullmatch(method, e.method)) and (path is None or re.search(path, e.path))]

    # -- deciding ------------------------------------------------------------
    def _serial(self, method: str, path: str, headers: http.client.HTTPMessage) -> Rule | None:
        with self._lock:
            return next((r for r in self.rules if r.serial and r.matches(method, path, headers)), None)

    def _choose(self, method: str, path: str, headers: http.client.HTTPMessage) -> tuple[_Act | None, Logged, list[Rule]]:
        """(what to do, the log entry, the rules holding back that count this request if it is answered 2xx)."""
        seen = {k.lower(): v for k, v in headers.items()}
        now = time.monotonic()
        waiting: list[Rule] = []
        with self._lock:
            for rule in self.rules:
                if rule.over(now) or not rule.matches(method, path, headers):
                    continue
                if rule.passed < rule.after:
                    waiting.append(rule)
                    continue
                rng = rule.rng or self._rng
                if rule.rate < 1.0 and rng.random() >= rule.rate:
                    continue
                rule.hits += 1
                if rule.started is None:
                    rule.started = now
                first, rule.first = rule.first, None
                act = self._act(rule, rng, first)
                entry = Logged(method, path, act.action, seen, now)
                self.log.append(entry)
                return act, entry, waiting
            entry = Logged(method, path, FORWARD, seen, now)
            self.log.append(entry)
            return None, entry, waiting

    @staticmethod
    def _act(rule: Rule, rng: random.Random, first: Callable[[], None] | None) -> _Act:
        if rule.action != RANDOM:
            return _Act(rule.action, rule.status, rule.body, rule.content_type, rule.seconds, first)
        kind = rng.choice(rule.kinds)
        if isinstance(kind, int):
            return _Act(RESPOND, kind, _error_body(_ERRORS.get(kind, "InternalError"), "injected by the test proxy"), first=first)
        return _Act(kind, seconds=rule.seconds, first=first)

    def _answered(self, entry: Logged, status: int, waiting: list[Rule]) -> None:
        with self._lock:
            entry.status = status
            if 200 <= status < 300:
                for rule in waiting:
                    rule.passed += 1

    def stall(self, seconds: float) -> None:
        self._stopping.wait(seconds)

    # -- life ----------------------------------------------------------------
    def start(self) -> Proxy:
        handler = type("Handler", (_Handler,), {"proxy": self})
        self._server = _Server(("127.0.0.1", self.port), handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                         name=f"s3proxy-{self.port}", daemon=True)  # fmt: skip
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)


@contextmanager
def start_proxy(upstream: str, *, seed: int = 0) -> Iterator[Proxy]:
    proxy = Proxy(upstream, seed=seed).start()
    try:
        yield proxy
    finally:
        proxy.stop()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64  # a run's many connections at once, as a store's listener takes them

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self.resets: set[int] = set()  # ids of the sockets to drop with a RST

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that went away mid-answer: what the proxy is for, not worth a traceback

    def shutdown_request(self, request: socket.socket) -> None:
        if id(request) in self.resets:
            self.resets.discard(id(request))
            request.close()  # no FIN first: SO_LINGER 0 makes this close a RST
            return
        super().shutdown_request(request)


class _Handler(http.server.BaseHTTPRequestHandler):
    proxy: Proxy
    protocol_version = "HTTP/1.1"  # keep-alive, as botocore's connection pool expects
    _upstream: http.client.HTTPConnection | None = None

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass

    def _any(self) -> None:
        body = self._read_body()
        serial = self.proxy._serial(self.command, self.path, self.headers)
        with serial.lock if serial is not None else nullcontext():
            act, entry, waiting = self.proxy._choose(self.command, self.path, self.headers)
            self.proxy._answered(entry, self._handle(act, body), waiting)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

    def _handle(self, act: _Act | None, body: bytes) -> int:
        """Carry out act on this request (None: forward it); the status answered, 0 for a reset."""
        if act is not None and act.first is not None:
            act.first()
        if act is not None and act.action == STALL:
            self.proxy.stall(act.seconds)
        if act is not None and act.action == RESPOND:
            self._answer(act.status, {"Content-Type": act.content_type}, act.body)
            return act.status
        if act is not None and act.action == RESET_BEFORE:
            self._reset()
            return 0
        try:
            status, headers, payload = self._forward(body)
        except OSError:
            self._reset()  # the server is gone: so is the answer
            return 0
        if act is not None and act.action == RESET_AFTER:
            self._reset()
            return 0
        if act is not None and act.action == CUT:
            self._answer(status, headers, payload, cut=len(payload) // 2)
            self._reset()
            return 0
        self._answer(status, headers, payload)
        return status

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        if self._upstream is None:
            u = urlsplit(self.proxy.upstream)
            self._upstream = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        if body or self.command in ("PUT", "POST"):
            headers["Content-Length"] = str(len(body))
        try:
            self._upstream.request(self.command, self.path, body=body, headers=headers)
            resp = self._upstream.getresponse()
        except (http.client.HTTPException, OSError):
            self._upstream.close()  # a stale kept-alive connection: once more on a new one
            self._upstream.request(self.command, self.path, body=body, headers=headers)
            resp = self._upstream.getresponse()
        payload = resp.read()
        return resp.status, [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP_BY_HOP], payload

    def _answer(self, status: int, headers: dict[str, str] | list[tuple[str, str]], body: bytes, *, cut: int | None = None) -> None:
        """Send the answer; with cut, only that many bytes of its body (the headers promise all of them)."""
        self.send_response_only(status)
        items = headers.items() if isinstance(headers, dict) else headers
        has_length = False
        for k, v in items:
            if k.lower() == "content-length":
                if self.command != "HEAD":
                    continue  # set below, from the body actually sent
                has_length = True
            self.send_header(k, v)
        if not has_length:
            self.send_header("Content-Length", str(len(body)))
        try:
            self.end_headers()
            if self.command != "HEAD" and body:
                self.wfile.write(body if cut is None else body[:cut])
            self.wfile.flush()
        except OSError:
            self.close_connection = True  # the client gave up waiting (its timeout) and went away

    def _reset(self) -> None:
        """Drop the connection with a TCP RST, as a crashed server or a middlebox would."""
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.server.resets.add(id(self.connection))
        self.close_connection = True

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass  # the client went away
        if self._upstream is not None:
            self._upstream.close()
