"""A Prometheus HTTP API that answers from a table, for the client's and the analysis runner's
unit tests (the integration tests run the real Prometheus)."""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = tuple[int, dict[str, Any]]


def ok(result_type: str, result: Any) -> Reply:
    return 200, {"status": "success", "data": {"resultType": result_type, "result": result}}


def vec(*series: tuple[dict[str, str], str]) -> Reply:
    return ok("vector", [{"metric": m, "value": [1700000000.0, v]} for m, v in series])


class FakePrometheus:
    """Answers ``/api/v1/query[_range]`` from ``replies[query]``; records the params."""

    def __init__(self) -> None:
        self.replies: dict[str, Reply] = {}
        self.default: Reply | None = None
        """The reply to a query not in ``replies`` (None: HTTP 400)."""
        self.delay = 0.0
        self.seen: list[dict[str, str]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                params = dict(urllib.parse.parse_qsl(url.query))
                fake.seen.append(params)
                time.sleep(fake.delay)
                code, body = fake.replies.get(
                    params.get("query", ""),
                    fake.default
                    or (400, {"status": "error", "errorType": "bad_data", "error": "no reply"}),
                )
                data = json.dumps(body).encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (timeout test)
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
