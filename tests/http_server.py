"""A real HTTP server on 127.0.0.1 for tests, able to misbehave on purpose.

    with LoopbackServer({"/data.bin": Route(body, drop_after=1000)}) as server:
        download(server.url("/data.bin"), ...)
        assert server.range_headers("/data.bin") == [None, "bytes=1000-"]

Routes map a path to bytes (served normally) or to a Route with a failure mode. Every
request is logged (path and Range header) so tests can assert what the client did.
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


@dataclass
class Route:
    body: bytes = b""
    status: int = 200  # anything but 200 is sent as an error with no body
    drop_after: int | None = None  # first request only: send this many body bytes, then hang up
    stall: bool = False  # send headers, then send nothing until `stall_seconds` pass
    ignore_range: bool = False  # answer 200 with the whole body even to a Range request
    location: str | None = None  # with status 301/302: where to redirect
    _dropped: bool = field(default=False, repr=False)


@dataclass(frozen=True)
class LoggedRequest:
    path: str
    range: str | None


class LoopbackServer:
    """ThreadingHTTPServer on an ephemeral loopback port, started and stopped by `with`."""

    def __init__(self, routes: dict[str, bytes | Route], *, stall_seconds: float = 3.0):
        self.routes = {p: r if isinstance(r, Route) else Route(r) for p, r in routes.items()}
        self.stall_seconds = stall_seconds
        self.requests: list[LoggedRequest] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stopping.set()  # wakes stalling handlers at once
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def url(self, path: str) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}{path}"

    def count(self, path: str) -> int:
        with self._lock:
            return sum(1 for r in self.requests if r.path == path)

    def range_headers(self, path: str) -> list[str | None]:
        with self._lock:
            return [r.range for r in self.requests if r.path == path]

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args):  # keep test output quiet
                pass

            def do_GET(self):
                range_header = self.headers.get("Range")
                with server._lock:
                    server.requests.append(LoggedRequest(self.path, range_header))
                route = server.routes.get(self.path)
                if route is not None and route.location:
                    self.send_response(route.status)
                    self.send_header("Location", route.location)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if route is None or route.status != 200:
                    self.close_connection = True
                    self.send_error(404 if route is None else route.status)
                    return
                body, start = route.body, 0
                match = _RANGE.fullmatch(range_header or "")
                if match and not route.ignore_range:
                    start = int(match.group(1))
                    end = int(match.group(2)) if match.group(2) else len(body) - 1
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    end = min(end, len(body) - 1)
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{end}/{len(body)}")
                    body = body[start:end + 1]
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()

                if route.stall:
                    self.wfile.flush()
                    server._stopping.wait(server.stall_seconds)
                    self.close_connection = True
                    return
                with server._lock:
                    drop = route.drop_after is not None and not route._dropped
                    route._dropped = route._dropped or drop
                if drop:
                    self.wfile.write(body[: route.drop_after])
                    self.wfile.flush()
                    self.close_connection = True  # server closes the socket: a short read
                    return
                self.wfile.write(body)

        return Handler
