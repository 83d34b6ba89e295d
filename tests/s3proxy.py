"""A fault-injecting HTTP reverse proxy for the tests, in front of a real server (moto) on its own loopback port.

Real object stores refuse what they do not implement, throttle, cut
connections and stall; moto does none of it. The proxy forwards every request
to the server unchanged (Host included, so SigV4 signatures still hold) and
lets a test choose requests to treat otherwise. Rules are tried in order; the
first that matches a request, and still has uses left, acts on it:

- ``respond``: answer with a status and body of its own; the server never sees the request
- ``reset-before``: reset the connection (TCP RST) without forwarding
- ``reset-after``: forward, let the server act, then reset instead of answering
- ``stall``: hold the request ``seconds``, then forward it

A rule matches on method, a regular expression searched in the path with its
query string, and a header (present, or whose value matches a regular
expression); ``times`` bounds how many requests it acts on, ``rate`` acts on
that share of the matching requests (drawn from a seeded generator). A
request no rule takes is forwarded as is. Every request is logged with its
headers and the action taken.

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
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

RESPOND, RESET_BEFORE, RESET_AFTER, STALL = "respond", "reset-before", "reset-after", "stall"
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "expect"}


@dataclass
class Rule:
    action: str  # RESPOND | RESET_BEFORE | RESET_AFTER | STALL
    method: str | None = None
    path: str | None = None  # regex searched in "/bucket/key?query"
    header: str | None = None  # the request must carry this header ...
    header_value: str | None = None  # ... with a value matching this regex, if given
    status: int = 500
    body: bytes = b""
    content_type: str = "application/xml"
    seconds: float = 0.0
    times: int | None = None  # requests it acts on; None: every matching one
    rate: float = 1.0
    hits: int = 0  # requests it acted on so far

    def matches(self, method: str, path: str, headers: http.client.HTTPMessage) -> bool:
        if self.method is not None and method != self.method:
            return False
        if self.path is not None and not re.search(self.path, path):
            return False
        if self.header is not None:
            value = headers.get(self.header)
            if value is None or (self.header_value is not None and not re.search(self.header_value, value)):
                return False
        return True


def s3_error(status: int, code: str, message: str = "", **match) -> Rule:
    """A rule answering with an S3 error document, as a store that refuses the request would."""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{escape(code)}</Code><Message>{escape(message or code)}</Message>"
        "<RequestId>pmigrate-test-proxy</RequestId></Error>"
    ).encode()
    return Rule(RESPOND, status=status, body=body, **match)


@dataclass(frozen=True)
class Logged:
    method: str
    path: str
    action: str  # "forward" or the acting rule's action
    headers: dict[str, str] = field(default_factory=dict)  # the request's, names in lower case


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
    _server: "_Server | None" = None
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
            return [e for e in self.log if e.action != "forward" and (action is None or e.action == action)]

    def choose(self, method: str, path: str, headers: http.client.HTTPMessage) -> Rule | None:
        seen = {k.lower(): v for k, v in headers.items()}
        with self._lock:
            for rule in self.rules:
                if rule.times is not None and rule.hits >= rule.times:
                    continue
                if not rule.matches(method, path, headers):
                    continue
                if rule.rate < 1.0 and self._rng.random() >= rule.rate:
                    continue
                rule.hits += 1
                self.log.append(Logged(method, path, rule.action, seen))
                return rule
            self.log.append(Logged(method, path, "forward", seen))
            return None

    def stall(self, seconds: float) -> None:
        self._stopping.wait(seconds)

    # -- life ----------------------------------------------------------------
    def start(self) -> "Proxy":
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

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self.resets: set[int] = set()  # ids of the sockets to drop with a RST

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
        rule = self.proxy.choose(self.command, self.path, self.headers)
        if rule is not None and rule.action == STALL:
            self.proxy.stall(rule.seconds)
            rule = None
        if rule is not None and rule.action == RESPOND:
            self._answer(rule.status, {"Content-Type": rule.content_type}, rule.body)
            return
        if rule is not None and rule.action == RESET_BEFORE:
            self._reset()
            return
        try:
            status, headers, payload = self._forward(body)
        except OSError:
            self._reset()  # the server is gone: so is the answer
            return
        if rule is not None and rule.action == RESET_AFTER:
            self._reset()
            return
        self._answer(status, headers, payload)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

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

    def _answer(self, status: int, headers: dict[str, str] | list[tuple[str, str]], body: bytes) -> None:
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
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)
        self.wfile.flush()

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
