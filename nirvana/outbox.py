"""A small mail outbox the kit runs: an HTTP service that records every message handed to it.

``POST /messages`` with a JSON body hands a message over; it is recorded and "sent" (appended to
the sent list) unless its ``Idempotency-Key`` header repeats one already sent, in which case the
first answer is repeated and nothing is sent again (the header of
https://datatracker.ietf.org/doc/draft-ietf-httpapi-idempotency-key-header/). ``GET /messages``
lists what was handed over and what was sent. It runs in a thread of the process that starts it
(a notebook's kernel) on a free loopback port, so ``notify`` can be killed around it.
"""

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 64 * 1024


@dataclass
class _Book:
    handed: list[dict] = field(default_factory=list)
    sent: list[dict] = field(default_factory=list)
    keys: dict[str, dict] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    book: _Book

    def log_message(self, *args) -> None:   # no request lines on a notebook's stderr
        pass

    def _answer(self, status: int, payload) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path != "/messages":
            return self._answer(404, {"error": "only /messages"})
        with self.book.lock:
            self._answer(200, {"handed": list(self.book.handed), "sent": list(self.book.sent)})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if self.path != "/messages" or not 0 < length <= MAX_BODY:
            return self._answer(400, {"error": f"POST a JSON message of 1 to {MAX_BODY} bytes to /messages"})
        try:
            message = json.loads(self.rfile.read(length))
        except ValueError:
            return self._answer(400, {"error": "the body is not JSON"})
        key = self.headers.get("Idempotency-Key")
        with self.book.lock:
            self.book.handed.append({"key": key, "message": message})
            if key is not None and key in self.book.keys:
                return self._answer(200, dict(self.book.keys[key], repeated=True))
            record = {"n": len(self.book.sent) + 1, "key": key, "message": message}
            self.book.sent.append(record)
            if key is not None:
                self.book.keys[key] = record
        self._answer(201, dict(record, repeated=False))


class Outbox:
    """``start()`` serves on 127.0.0.1 (a free port unless given), ``url`` for OUTBOX_URL,
    ``handed()``/``sent()`` read the book, ``stop()`` ends it (idempotent)."""

    def __init__(self, port: int = 0) -> None:
        self.book = _Book()
        handler = type("Handler", (_Handler,), {"book": self.book})
        self.server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread: threading.Thread | None = None

    def start(self) -> "Outbox":
        if self._thread is None:
            self._thread = threading.Thread(target=self.server.serve_forever, name="nirvana-outbox", daemon=True)
            self._thread.start()
        return self

    def handed(self, event_id: str | None = None) -> int:
        """Messages handed over (for one event, when given), repeats included."""
        with self.book.lock:
            return sum(1 for m in self.book.handed if event_id in (None, m["message"].get("event")))

    def sent(self, event_id: str | None = None) -> int:
        """Messages sent (for one event, when given): a repeated idempotency key is not sent again."""
        with self.book.lock:
            return sum(1 for m in self.book.sent if event_id in (None, m["message"].get("event")))

    def stop(self) -> None:
        if self._thread is not None:
            self.server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self.server.server_close()


__all__ = ["Outbox"]
