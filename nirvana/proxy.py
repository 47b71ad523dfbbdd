"""A TCP proxy in front of the broker that can lose connections at any step of the AMQP handshake.

What a load balancer or port proxy with no healthy node behind it does, and what a broker that is
restarting does to a client in the middle of its handshake (pika/pika#830, #516): the client's
connection is accepted, then closed before the broker has answered anything (an EOF during the
protocol header), closed after some of the broker's answer (during Connection.Start or
Connection.Tune), or reset. A client must read each of these as the broker being away, never as
a refusal (svc.amqp.classify). The chaos run (:mod:`nirvana.chaos`) puts its services behind one,
and the tests of svc's handshake drive it through each mode.

    with HandshakeProxy(("127.0.0.1", 5672)) as proxy:
        url = proxy.url("amqp://guest:guest@127.0.0.1:5672/%2F")   # the same URL, the proxy's port
        proxy.mode = "eof"    # every new connection closed before the broker answers
        ...
        proxy.mode = "forward"

Everything binds 127.0.0.1. Threads: one accepting, two per relayed connection (daemons).
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from urllib.parse import urlsplit, urlunsplit

# How each new connection is treated:
MODES = {
    "forward": "relayed to the broker",
    "eof": "closed after reading the client's protocol header, before the broker answers (EOF)",
    "start": "relayed until the broker's first answer (Connection.Start) reached the client, then closed",
    "tune": "relayed until the broker's second answer (Connection.Tune) reached the client, then closed",
    "reset": "reset (TCP RST) after reading the client's protocol header",
    "protocol": "answered with another protocol's header (AMQP 1.0) and closed, as a server that does not speak 0-9-1",
}
LOST_HANDSHAKES = ("eof", "start", "tune", "reset")   # the modes that lose a handshake (none answers it)
CHUNK = 65536
CONNECT_TIMEOUT = 5.0   # seconds for the proxy's own connection to the broker
HEADER_TIMEOUT = 5.0    # seconds to wait for the client's protocol header before closing anyway
AMQP_1_0_HEADER = b"AMQP" + bytes((0, 1, 0, 0))


class HandshakeProxy:
    """A proxy on 127.0.0.1 (``port``, a free one unless given) to ``target`` (host, port).

    ``mode`` (one of MODES, changeable at any time) says what a new connection gets; ``cycle``
    (a sequence of modes, optional) gives each new connection the next of them in turn instead.
    ``accepted`` counts connections per mode. ``pace`` (optional, changeable at any time: bytes,
    seconds) relays what the broker sends at most that many bytes every that many seconds, as a slow
    link or a loaded broker that sends a consumer its deliveries in a trickle.
    ``cut()`` closes every relayed connection now.
    ``close()`` (or leaving ``with``) stops it and closes everything.
    """

    def __init__(self, target: tuple[str, int], *, port: int = 0, mode: str = "forward") -> None:
        self.target, self.mode, self.cycle = target, mode, ()
        self.pace: tuple[int, float] | None = None
        self.accepted: dict[str, int] = {name: 0 for name in MODES}
        self._lock = threading.Lock()
        self._relayed: set[socket.socket] = set()
        self._listener = socket.create_server(("127.0.0.1", port))
        self.port = self._listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, name=f"proxy-{self.port}", daemon=True).start()

    def __enter__(self) -> HandshakeProxy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def url(self, amqp_url: str) -> str:
        """``amqp_url`` (one AMQP URL) with host and port replaced by the proxy's."""
        parts = urlsplit(amqp_url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@127.0.0.1:{self.port}" if userinfo else f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    def cut(self) -> int:
        """Close every relayed connection (both ends: client and broker); how many were closed."""
        with self._lock:
            relayed, self._relayed = self._relayed, set()
        for sock in relayed:
            _close(sock)
        return len(relayed) // 2

    def close(self) -> None:
        self._closed = True
        _close(self._listener)
        self.cut()

    # -- per connection ------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return   # closed
            with self._lock:
                if self.cycle:
                    mode = self.cycle[sum(self.accepted.values()) % len(self.cycle)]
                else:
                    mode = self.mode
                self.accepted[mode] += 1
            threading.Thread(target=self._serve, args=(client, mode), daemon=True).start()

    def _serve(self, client: socket.socket, mode: str) -> None:
        if mode in ("eof", "reset", "protocol"):
            client.settimeout(HEADER_TIMEOUT)
            try:
                client.recv(8)   # the client's protocol header "AMQP\x00\x00\x09\x01"
                if mode == "protocol":
                    client.sendall(AMQP_1_0_HEADER)
            except OSError:
                pass
            if mode == "reset":   # SO_LINGER on, 0 s: close() sends RST instead of FIN
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                client.close()
            else:
                _close(client)
            return
        try:
            broker = socket.create_connection(self.target, timeout=CONNECT_TIMEOUT)
            broker.settimeout(None)
        except OSError:
            _close(client)   # no broker behind the proxy: the client sees an EOF, as from a balancer
            return
        with self._lock:
            self._relayed.update((client, broker))
        answers = {"start": 1, "tune": 2}.get(mode)   # the broker's answers let through before the close
        threading.Thread(target=self._pipe, args=(client, broker, None), daemon=True).start()
        self._pipe(broker, client, answers, paced=True)

    def _pipe(self, source: socket.socket, sink: socket.socket, answers: int | None, paced: bool = False) -> None:
        """Copy ``source`` to ``sink`` until either ends; with ``answers``, close both after that many
        chunks (AMQP frames from the broker arrive one answer per read during the handshake);
        ``paced``: at the proxy's ``pace`` while it has one."""
        try:
            while True:
                pace = self.pace if paced else None
                data = source.recv(pace[0] if pace else CHUNK)
                if not data:
                    break
                sink.sendall(data)
                if pace:
                    time.sleep(pace[1])
                if answers is not None:
                    answers -= 1
                    if answers <= 0:
                        break
        except OSError:
            pass
        for sock in (source, sink):
            _close(sock)
            with self._lock:
                self._relayed.discard(sock)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


__all__ = ["HandshakeProxy", "MODES", "LOST_HANDSHAKES"]
