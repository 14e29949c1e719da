"""Which service the deploy step checks: the running one whenever it can take the model."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from include.mlops.delivery.service import service_for_check, usable_service

NO_CHAMPION = {"champion": "the registered model has no champion alias"}


@pytest.mark.parametrize(
    ("code", "body", "usable"),
    [
        (200, {"model_name": "m", "champion": {"version": "3"}}, True),
        (503, {"model_name": "m", "champion": None, "pending": NO_CHAMPION}, True),  # waits for its first
        (503, {"model_name": "other", "champion": None, "pending": NO_CHAMPION}, False),
        (200, {"model_name": "other", "champion": {"version": "1"}}, False),
        (503, {"model_name": "m", "champion": None, "pending": {"champion": "v4: MlflowException: gone"}}, False),
        (503, {"model_name": "m", "champion": None, "pending": {}}, True),  # not read the registry yet
        (503, {"model_name": "m", "champion": {"version": "2"}, "pending": {}}, False),  # serves, not ready
    ],
)
def test_usable_service(code, body, usable):
    assert usable_service(code, body, "m") is usable


@pytest.fixture
def waiting_service():
    """A loopback HTTP server answering /ready as a scoring service with no champion does."""

    class Ready(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            body = json.dumps({"status": "loading", "model_name": "m", "champion": None, "pending": NO_CHAMPION})
            self.send_response(503 if self.path == "/ready" else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Ready)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_the_running_service_takes_the_first_champions_check(waiting_service, monkeypatch):
    monkeypatch.setenv("MLOPS_SERVE_URL", waiting_service + "/")
    monkeypatch.setenv("MLOPS_ADMIN_TOKEN", "t0ken")
    h = service_for_check("m")
    assert (h.url, h.token, h.started) == (waiting_service, "t0ken", False)  # not a service of its own
