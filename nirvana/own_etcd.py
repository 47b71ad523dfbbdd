"""A throwaway etcd on free loopback ports, for chapters that stop and restart etcd.

The shared stack's etcd (port 2379) is never stopped by a chapter: other notebooks, tests and
people use it. A chapter that shows etcd going away starts one of these, points its services at
:attr:`OwnEtcd.endpoint`, and stops it at the end (also at interpreter exit). Its data lives in a
temporary folder that survives :meth:`OwnEtcd.restart` and is removed by :meth:`OwnEtcd.close`.
"""

import atexit
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from ._wait import Progress, poll, quiet
from .errors import StackError

START_TIMEOUT = 20.0    # seconds for a fresh etcd to accept connections
STOP_TIMEOUT = 10.0     # seconds for etcd to exit after SIGTERM, then SIGKILL


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answering(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


class OwnEtcd:
    """One etcd member of its own: ``start()``, ``stop()``, ``restart()``, ``close()``.

    Raises StackError naming the package when the ``etcd`` binary is missing (``./kit setup``
    installs etcd-server), and TimeoutError when it does not answer within START_TIMEOUT.
    """

    def __init__(self, *, progress: Progress = quiet) -> None:
        if shutil.which("etcd") is None:
            raise StackError("etcd is not installed: run ./kit setup (Debian package etcd-server)")
        self.client, self.peer = free_port(), free_port()
        self.endpoint = f"127.0.0.1:{self.client}"
        self.data_dir = Path(tempfile.mkdtemp(prefix="nirvana-own-etcd-"))
        self.progress = progress
        self.process: subprocess.Popen | None = None
        atexit.register(self.close)

    def _argv(self) -> list[str]:
        peer = f"http://127.0.0.1:{self.peer}"
        return ["etcd", "--name", "own", "--data-dir", str(self.data_dir / "data"),
                "--listen-client-urls", f"http://{self.endpoint}", "--advertise-client-urls", f"http://{self.endpoint}",
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"own={peer}"]

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> "OwnEtcd":
        if not self.running:
            with open(self.data_dir / "etcd.log", "ab") as log:
                self.process = subprocess.Popen(self._argv(), stdin=subprocess.DEVNULL, stdout=log,
                                                stderr=subprocess.STDOUT, start_new_session=True)
            poll(lambda: _answering(self.client), bool, what=f"the throwaway etcd on {self.endpoint}",
                 timeout=START_TIMEOUT, progress=quiet)
            self.progress(f"throwaway etcd: up on {self.endpoint}")
        return self

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT; the data stays for the next start."""
        if self.running:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT)
            self.progress(f"throwaway etcd: stopped ({self.endpoint})")

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop it and remove its data (idempotent)."""
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)


__all__ = ["OwnEtcd", "free_port"]
