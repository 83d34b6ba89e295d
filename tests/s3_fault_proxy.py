"""An HTTP proxy in front of an S3 server that turns against its client after a number of object PUTs.

Each request is forwarded as it came (headers, signature and all) and the
answer sent back. Once ``after_puts`` object PUTs went through, ``on_trip``
runs once (e.g. deletes the bucket on the real server), and from then on
every object PUT and multipart start is answered with ``status``/``code``, if
given, as S3 answers them. The keys whose PUT succeeded are kept in ``stored``.
"""

from __future__ import annotations

import http.client
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import urlsplit

from pmigrate.data.base import PROBE_PREFIX, is_marker
from tests.servers import S3Server

_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "trailer", "upgrade"}


class FaultProxy:
    def __init__(
        self,
        upstream: S3Server,
        *,
        after_puts: int,
        status: int = 0,
        code: str = "",
        on_trip: Callable[[], None] | None = None,
    ) -> None:
        self.upstream = upstream
        self.after_puts = after_puts
        self.status = status
        self.code = code
        self.on_trip = on_trip
        self.armed = True
        self.stored: list[str] = []  # object keys (bucket/key) whose PUT the upstream accepted, in order
        self.refused = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def server(self) -> S3Server:
        """The upstream as clients should see it: through this proxy."""
        host, port = self._server.server_address[:2]
        return replace(self.upstream, endpoint=f"{host}:{port}", url=f"http://{host}:{port}")

    def __enter__(self) -> "FaultProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    # -- the rule ----------------------------------------------------------------
    @staticmethod
    def _writes(method: str, path: str) -> bool:
        """An object PUT (not a part of one) or the start of a multipart upload."""
        parts = urlsplit(path)
        if parts.path.strip("/").count("/") < 1:
            return False  # a bucket request
        if is_marker(parts.path) or PROBE_PREFIX in parts.path:
            return False  # pmigrate's ownership record, and the probe of a write, both before the first blob
        return (method == "PUT" and "partNumber" not in parts.query) or (method == "POST" and "uploads" in parts.query)

    def _refuse(self) -> bool:
        """Under the lock: True to refuse this write; runs on_trip once first."""
        if not self.armed or len(self.stored) < self.after_puts:
            return False
        if self.on_trip is not None:
            trip, self.on_trip = self.on_trip, None
            trip()
        if self.status:
            self.refused += 1
            return True
        return False

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _body(self) -> bytes:
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    out = bytearray()
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return bytes(out)
                        out += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _send(self, status: int, headers: list[tuple[str, str]], body: bytes, *, head: bool) -> None:
                self.send_response(status)
                for k, v in headers:
                    if k.lower() not in _HOP and not (k.lower() == "content-length" and not head):
                        self.send_header(k, v)
                if not head:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def _any(self) -> None:
                body = self._body()
                if not proxy._writes(self.command, self.path):
                    self._forward(body)
                    return
                with proxy._lock:  # writes one at a time: none slips past the trip
                    if not proxy._refuse():
                        if self._forward(body) == 200 and self.command == "PUT":
                            proxy.stored.append(urlsplit(self.path).path.lstrip("/"))
                        return
                xml = (
                    '<?xml version="1.0" encoding="UTF-8"?>\n'
                    f"<Error><Code>{proxy.code}</Code><Message>refused by the test proxy</Message>"
                    "<RequestId>0</RequestId></Error>"
                ).encode()
                self._send(proxy.status, [("Content-Type", "application/xml")], xml, head=False)

            def _forward(self, body: bytes) -> int:
                up = urlsplit(proxy.upstream.url)
                conn = http.client.HTTPConnection(up.hostname, up.port, timeout=60)
                try:
                    conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                    for k, v in self.headers.items():
                        if k.lower() not in _HOP and k.lower() != "content-length":
                            conn.putheader(k, v)
                    if body or self.command in ("PUT", "POST"):
                        conn.putheader("Content-Length", str(len(body)))
                    conn.endheaders(body or None)
                    resp = conn.getresponse()
                    data = resp.read()
                    self._send(resp.status, resp.getheaders(), data, head=self.command == "HEAD")
                    return resp.status
                finally:
                    conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        return Handler
