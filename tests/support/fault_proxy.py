"""A small HTTP fault proxy for tests: forwards every request to a target server and, by rules
switched at runtime, answers some of them with an error, delays them, or holds them unanswered.

It runs in a thread of the test process, so the test changes its rules between two steps:

    with FaultProxy("http://127.0.0.1:5000") as proxy:      # proxy.url is what the client uses
        proxy.add(method="GET", path=r"/registered-models/alias", status=500)
        ...                                                  # the step meets the fault
        proxy.clear()                                        # the retry does not

Rules are tried in order; the first that matches a request decides it. A rule can let its
first `skip` matching requests through and stop after `times` faults (None: every one), which
is how "the second alias write fails" is said. A hung request is accepted and never answered
until `release()` (or `clear()`, `stop()`), then dropped unanswered: the client's own timeout is
what ends it for the client, and a held write never reaches the target late.

Every request is recorded (method, path, what the proxy did, the status returned), so a test
can count what failed. Standard library only; HTTP/1.1 with Content-Length or chunked bodies.
"""

from __future__ import annotations

import http.client
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
}


@dataclass
class Rule:
    """One fault: which requests (method, a regex searched in the path with its query) and what
    happens to them: `status` (an error answer), `delay` (seconds before forwarding) or `hang`."""

    method: str | None = None
    path: str = ""
    status: int | None = None
    delay: float = 0.0
    hang: bool = False
    skip: int = 0
    times: int | None = None
    body: str = '{"error_code": "INTERNAL_ERROR", "message": "injected by the fault proxy"}'
    content_type: str = "application/json"
    seen: int = 0
    applied: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.method and self.method.upper() != method.upper():
            return False
        return re.search(self.path, path) is not None

    def take(self) -> bool:
        """Count one matching request; whether the fault applies to it."""
        self.seen += 1
        if self.seen <= self.skip:
            return False
        if self.times is not None and self.applied >= self.times:
            return False
        self.applied += 1
        return True


S3_ERROR = (
    '<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code>'
    "<Message>We encountered an internal error. Please try again. (fault proxy)</Message></Error>"
)


@dataclass
class Record:
    method: str
    path: str
    action: str  # forwarded | error | delayed | hung | upstream-error
    status: int | None
    at: float = field(default_factory=time.monotonic)


class FaultProxy:
    """The proxy; `start()` (or `with`) binds a free loopback port and serves from a thread."""

    def __init__(self, target: str, *, upstream_timeout: float = 300.0) -> None:
        parsed = urllib.parse.urlsplit(target)
        if parsed.scheme != "http" or not parsed.hostname:
            raise ValueError(f"the fault proxy forwards to http://host:port, not {target!r}")
        self.target_host = parsed.hostname
        self.target_port = parsed.port or 80
        self.upstream_timeout = upstream_timeout
        self._rules: list[Rule] = []
        self._records: list[Record] = []
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # -- control -------------------------------------------------------------------------------
    def add(self, **kwargs: Any) -> Rule:
        """Add a rule (see `Rule`); returns it, so a test can read `applied` afterwards."""
        rule = Rule(**kwargs)
        if rule.hang:
            self._released.clear()
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        """No more faults; requests held by a hang rule are dropped."""
        with self._lock:
            self._rules.clear()
        self.release()

    def release(self) -> None:
        """End every hung request: its connection is closed unanswered (never forwarded late)."""
        self._released.set()

    def records(self) -> list[Record]:
        with self._lock:
            return list(self._records)

    def faults(self) -> list[Record]:
        """The requests the proxy failed, delayed or held."""
        return [r for r in self.records() if r.action != "forwarded"]

    def failed(self) -> list[Record]:
        """The requests whose client saw an error status (injected or from upstream)."""
        return [r for r in self.records() if r.status is None or r.status >= 500]

    def reset_records(self) -> None:
        with self._lock:
            self._records.clear()

    def _decide(self, method: str, path: str) -> Rule | None:
        with self._lock:
            for rule in self._rules:
                if rule.matches(method, path):
                    return rule if rule.take() else None
        return None

    def _record(self, method: str, path: str, action: str, status: int | None) -> None:
        with self._lock:
            self._records.append(Record(method, path, action, status))

    # -- life cycle ------------------------------------------------------------------------------
    def start(self) -> FaultProxy:
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.clear()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the records say it all
        return

    def _body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length:
            return self.rfile.read(int(length))
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        return b""

    def _handle(self) -> None:
        proxy = self.owner
        method, path = self.command, self.path
        body = self._body()
        rule = proxy._decide(method, path)
        action = "forwarded"
        if rule is not None and rule.hang:
            proxy._record(method, path, "hung", None)
            proxy._released.wait()  # until the test releases it; the client has given up by then
            self.close_connection = True  # dropped, never forwarded: a late write would change state
            return
        elif rule is not None and rule.status is not None:
            data = rule.body.encode()
            self.send_response(rule.status)
            self.send_header("Content-Type", rule.content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            proxy._record(method, path, "error", rule.status)
            return
        elif rule is not None and rule.delay:
            time.sleep(rule.delay)
            action = "delayed"
        self._forward(method, path, body, action)

    def _forward(self, method: str, path: str, body: bytes, action: str) -> None:
        proxy = self.owner
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP and k.lower() != "host"}
        headers["Host"] = f"{proxy.target_host}:{proxy.target_port}"
        headers["Content-Length"] = str(len(body))
        conn = http.client.HTTPConnection(proxy.target_host, proxy.target_port, timeout=proxy.upstream_timeout)
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            data = f'{{"error_code": "BAD_GATEWAY", "message": "fault proxy: upstream {type(exc).__name__}"}}'.encode()
            try:
                self.send_response(502)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:
                pass
            proxy._record(method, path, "upstream-error", 502)
            return
        finally:
            conn.close()
        try:
            self.send_response(resp.status, resp.reason)
            for k, v in resp.getheaders():
                if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(data)
        except OSError:  # the client gave up (a timeout while the request was held)
            proxy._record(method, path, f"{action}-client-gone", None)
            return
        proxy._record(method, path, action, resp.status)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle


def wait_http(url: str, deadline_s: float, what: str, proc: Any = None) -> None:
    """Poll `url` until it answers 2xx, with a deadline; fails early when `proc` has exited."""
    import urllib.request

    end = time.monotonic() + deadline_s
    last: object = None
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if 200 <= r.status < 300:
                    return
        except Exception as exc:  # not up yet
            last = exc
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not answer {url} within {deadline_s:.0f} s (last: {last})")
