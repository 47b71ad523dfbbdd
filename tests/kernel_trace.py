"""The kernel's websocket messages as a browser page sends and receives them, for a run that stalls.

JupyterLab talks to a kernel over ``/api/kernels/<id>/channels``: JSON text frames (the legacy
protocol) or binary frames of the ``v1.kernel.websocket.jupyter.org`` subprotocol (8-byte
little-endian count n, n offsets, then channel, header, parent header, metadata, content, buffers:
jupyter_server's ``deserialize_msg_from_ws_v1``). :class:`KernelTrace` keeps one line per frame
(seconds since the page opened, direction, kernel id, channel, msg_type, msg_id, parent's msg_id,
the start of the content), the websocket opens, closes and errors, and the page's console; a failed
run saves it beside its screenshot, with the end of JupyterLab's log.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

CONTENT_CHARS = 120


def decode(payload: str | bytes) -> dict:
    """One kernel websocket frame -> {channel, type, id, parent, content} (ids shortened to 8
    characters, content to CONTENT_CHARS); a frame that is neither protocol -> {raw: ...}."""
    try:
        if isinstance(payload, str):
            message = json.loads(payload)
            channel, header = message.get("channel"), message.get("header") or {}
            parent, content = message.get("parent_header") or {}, json.dumps(message.get("content"))
        else:
            data = bytes(payload)
            count = struct.unpack_from("<Q", data, 0)[0]
            offsets = [struct.unpack_from("<Q", data, 8 * (i + 1))[0] for i in range(count)] + [len(data)]
            parts = [data[offsets[i]:offsets[i + 1]] for i in range(count)]
            channel = parts[0].decode()
            header = json.loads(parts[1]) if len(parts) > 1 and parts[1] else {}
            parent = json.loads(parts[2]) if len(parts) > 2 and parts[2] else {}
            content = parts[4].decode(errors="replace") if len(parts) > 4 else ""
    except (ValueError, struct.error, UnicodeDecodeError, IndexError):
        return {"raw": repr(payload[:80])}
    return {"channel": channel, "type": header.get("msg_type"), "id": header.get("msg_id", "")[-8:],
            "parent": parent.get("msg_id", "")[-8:], "content": content[:CONTENT_CHARS]}


def kernel_of(url: str) -> str:
    """``ws://host/api/kernels/<id>/channels?...`` -> the kernel id's first 8 characters."""
    parts = url.split("?")[0].split("/")
    return parts[parts.index("kernels") + 1][:8] if "kernels" in parts else parts[-1]


class KernelTrace:
    """Record a Playwright page's kernel websockets and console from now on (attach before goto)."""

    def __init__(self, page):
        self.started = time.monotonic()
        self.lines: list[dict] = []
        page.on("websocket", self._websocket)
        page.on("console", lambda message: self.note("console", level=message.type, text=message.text[:300]))

    def note(self, kind: str, **fields) -> None:
        """Add a line of ``kind`` (also for the test's own steps: "run all clicked")."""
        self.lines.append({"t": round(time.monotonic() - self.started, 3), "kind": kind, **fields})

    def _websocket(self, socket) -> None:
        if "/api/kernels/" not in socket.url:
            return
        kernel = kernel_of(socket.url)
        self.note("ws-open", kernel=kernel)
        socket.on("framesent", lambda payload: self.note("sent", kernel=kernel, **decode(payload)))
        socket.on("framereceived", lambda payload: self.note("recv", kernel=kernel, **decode(payload)))
        socket.on("close", lambda _socket: self.note("ws-close", kernel=kernel))
        socket.on("socketerror", lambda error: self.note("ws-error", kernel=kernel, error=str(error)))

    def requests_unanswered(self) -> list[str]:
        """The execute_requests sent with no execute_reply received: 'kernel/msg_id'."""
        sent = [f"{line['kernel']}/{line['id']}" for line in self.lines
                if line["kind"] == "sent" and line.get("type") == "execute_request"]
        replied = {f"{line['kernel']}/{line['parent']}" for line in self.lines
                   if line["kind"] == "recv" and line.get("type") == "execute_reply"}
        return [request for request in sent if request not in replied]

    def summary(self) -> str:
        """Kernels seen, websockets opened/closed, execute requests sent/answered: one line."""
        kernels = sorted({line["kernel"] for line in self.lines if "kernel" in line})
        count = {kind: sum(line["kind"] == kind for line in self.lines) for kind in ("ws-open", "ws-close", "ws-error")}
        sent = sum(line.get("type") == "execute_request" for line in self.lines if line["kind"] == "sent")
        return (f"kernels {kernels}, websockets opened {count['ws-open']} closed {count['ws-close']} "
                f"failed {count['ws-error']}, execute_request sent {sent}, unanswered {len(self.requests_unanswered())}")

    def save(self, path: Path, lab_log: Path | None = None, log_chars: int = 20_000) -> Path:
        """Write the trace (one JSON line each) to ``path`` and the end of ``lab_log`` beside it
        (``<path>.lab.log``); returns ``path``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(line) + "\n" for line in self.lines))
        if lab_log is not None and lab_log.exists():
            text = lab_log.read_bytes()[-log_chars:].decode(errors="replace")
            path.with_suffix(".lab.log").write_text(text)
        return path
