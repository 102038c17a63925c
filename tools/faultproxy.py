"""Proxies that misbehave on purpose: in front of S3 (failed requests, no conditional writes, a wrong
clock) and in front of PostgreSQL (a connection cut midway). Fault injection for the tests.

Modelled on pgBackRest's scripted-server tests: the client under test talks real HTTP and sees a
real server error midway through a multipart upload.
"""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

ERROR_XML = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code>'
             b"<Message>injected fault: part upload failed</Message></Error>")
NOT_IMPLEMENTED_XML = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>NotImplemented</Code>'
                       b"<Message>A header you provided implies functionality that is not implemented</Message></Error>")


class S3Proxy:
    """Forwards every request to the S3 endpoint on ``upstream_port``, with two ways to misbehave.

    ``refuse(command, path, headers)`` returns ``(status, xml_body)`` to answer a request itself
    (it never reaches the endpoint; ``refused`` counts them), or None to forward it.
    ``date_offset`` (seconds) shifts the ``Date`` header of every answer: an endpoint with a wrong clock.
    """

    def __init__(self, upstream_port: int, *, refuse=None, date_offset: float = 0.0):
        import email.utils
        import time

        self.upstream_port = upstream_port
        self.refused = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def date_time_string(self, timestamp=None):  # what send_response puts in the Date header
                return email.utils.formatdate((timestamp or time.time()) + date_offset, usegmt=True)

            def _answer(self, status: int, headers: list[tuple[str, str]], data: bytes, length: str) -> None:
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", length)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                answer = refuse(self.command, self.path, self.headers) if refuse else None
                if answer is not None:
                    proxy.refused += 1
                    status, xml = answer
                    self._answer(status, [("Content-Type", "application/xml")], xml, str(len(xml)))
                    return
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=60)
                upstream.request(self.command, self.path, body=body,
                                 headers={k: v for k, v in self.headers.items() if k.lower() != "connection"})
                resp = upstream.getresponse()
                data = resp.read()
                skip = ("transfer-encoding", "connection", "content-length", "server", "date")
                # HEAD: the object's length, not the empty body's
                size = resp.getheader("Content-Length", "0") if self.command == "HEAD" else str(len(data))
                self._answer(resp.status, [(k, v) for k, v in resp.getheaders() if k.lower() not in skip], data, size)
                upstream.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

            def log_message(self, *args):
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()


class FaultProxy(S3Proxy):
    """Answers 500 to UploadPart requests with partNumber >= fail_from_part: an upload failing midway."""

    def __init__(self, upstream_port: int, fail_from_part: int = 2):
        def refuse(command, path, headers):
            part = int(parse_qs(urlsplit(path).query).get("partNumber", ["0"])[0])
            return (500, ERROR_XML) if command == "PUT" and part >= fail_from_part else None

        super().__init__(upstream_port, refuse=refuse)

    @property
    def failed_requests(self) -> int:
        return self.refused


class NoConditionalWritesProxy(S3Proxy):
    """An S3 endpoint without conditional writes: 501 NotImplemented to any If-None-Match write."""

    def __init__(self, upstream_port: int):
        def refuse(command, path, headers):
            return (501, NOT_IMPLEMENTED_XML) if command in ("PUT", "POST") and headers.get("If-None-Match") else None

        super().__init__(upstream_port, refuse=refuse)


class TcpCutProxy:
    """A TCP relay to ``127.0.0.1:upstream_port`` (e.g. PostgreSQL) that cuts connections midway.

    The first ``cuts`` connections whose client has sent more than ``cut_after_bytes`` are reset on
    both sides (SO_LINGER 0): to the client it is a server that went away mid-stream, as when the
    restore server's connection drops. Small sessions (connect, a query) pass untouched; later
    connections pass once the cuts are used up.
    """

    def __init__(self, upstream_port: int, *, cut_after_bytes: int = 256 * 1024, cuts: int = 1):
        import socket

        self.upstream_port = upstream_port
        self.cut_after_bytes = cut_after_bytes
        self.cuts_left = cuts
        self.cut = 0  # connections cut so far
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._stopping = False
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def start(self) -> TcpCutProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping = True
        self._listener.close()

    def _accept(self) -> None:
        import socket

        while not self._stopping:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                client.close()
                continue
            state = {"sent": 0, "closed": False}
            threading.Thread(target=self._pump, args=(client, upstream, state, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, state, False), daemon=True).start()

    def _pump(self, src, dst, state: dict, from_client: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if from_client:
                    state["sent"] += len(data)
                    if state["sent"] > self.cut_after_bytes and self._take_cut():
                        self._reset(src, dst, state)
                        return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            if not state["closed"]:
                state["closed"] = True
                for s in (src, dst):
                    _shut(s)

    def _take_cut(self) -> bool:
        with self._lock:
            if self.cuts_left <= 0:
                return False
            self.cuts_left -= 1
            self.cut += 1
            return True

    @staticmethod
    def _reset(a, b, state: dict) -> None:
        import socket
        import struct

        state["closed"] = True
        for s in (a, b):
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
            _shut(s)


def _shut(sock) -> None:
    """Close a socket another thread may be blocked reading: shutdown() wakes that reader (a bare
    close() would leave the connection open until its recv returns, i.e. never)."""
    import socket

    for step in (lambda: sock.shutdown(socket.SHUT_RDWR), sock.close):
        try:
            step()
        except OSError:
            pass
