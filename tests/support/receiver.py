"""A webhook receiver on loopback: keeps every envelope it acknowledges, per path.

Modes: "up" answers 200 and records; "fail" answers 503; "hang" accepts the connection, reads the
request and never answers (until the mode changes, when it closes without recording), the worst
kind of down for a sender: every attempt costs its full timeout.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    envelope: dict[str, Any]


@dataclass
class Receiver:
    mode: str = "up"
    deliveries: list[Delivery] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._changed = threading.Condition()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def set_mode(self, mode: str) -> None:
        with self._changed:
            self.mode = mode
            self._changed.notify_all()

    def events(self, path: str | None = None) -> list[dict[str, Any]]:
        return [e for d in list(self.deliveries) if path is None or d.path == path for e in d.envelope["events"]]

    def stop(self) -> None:
        self.set_mode("up")
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # http.server's naming
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with receiver._changed:
                    if receiver.mode == "hang":
                        receiver._changed.wait_for(lambda: receiver.mode != "hang", timeout=120)
                        self.close_connection = True
                        return
                    mode = receiver.mode
                if mode == "up":
                    receiver.deliveries.append(Delivery(self.path, {k.lower(): v for k, v in self.headers.items()}, json.loads(body)))
                self.send_response(200 if mode == "up" else 503)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        return Handler
