"""A throwaway etcd on free loopback ports, for tests and chapters that stop, freeze or limit etcd.

The shared stack's etcd (port 2379) is never stopped by a test or a chapter: other notebooks,
tests and people use it. Whoever shows etcd going away (a dead claim's lease, etcd down, a
transaction over the server's limits) starts one of these, points its services at
:attr:`OwnEtcd.endpoint`, and stops it at the end (also at interpreter exit; and should its
starter die without an exit, a kernel SIGKILLed, its :class:`nirvana.watchdog.Watchdog` stops it
and removes its temporary folder). Started, awaited and stopped by :mod:`nirvana.launcher`. Used
by the tests (``nirvana.testing.OwnEtcd``, the ``etcd_factory`` fixture) and by the chapters
(``nirvana.OwnEtcd``).
"""

import atexit
import shutil
import tempfile
from pathlib import Path

from . import launcher
from ._wait import Progress, quiet
from .errors import StackError, WaitTimeout
from .launcher import free_port, tcp_open
from .watchdog import Watchdog

START_TIMEOUT = 20.0    # seconds for a fresh etcd to serve requests
READY = "ready to serve client requests"   # etcd's log line once its server is ready (embed, etcd 3.4 and 3.5)
STOP_TIMEOUT = 10.0     # seconds for etcd to exit after SIGTERM, then SIGKILL


class OwnEtcd:
    """One etcd member of its own: ``start()``, ``stop()``, ``restart()``, ``close()``.

    ``data_dir``: where its data lives (kept by ``close()``); by default a temporary folder that
    ``close()`` removes. ``flags``: extra etcd flags (``"--max-txn-ops", "16"``,
    ``"--quota-backend-bytes", ...``) for limits the stack's etcd does not have; with
    ``"--cert-file", ..., "--key-file", ...`` it serves its clients over TLS (:attr:`url`). ``progress`` is
    told one line when it starts and stops. Raises :class:`nirvana.errors.StackError` when the
    ``etcd`` binary is missing (``./kit setup`` installs Debian's etcd-server), and TimeoutError
    from ``start()`` when it does not answer within START_TIMEOUT seconds.
    """

    def __init__(self, *flags: str, data_dir: str | Path | None = None, progress: Progress = quiet) -> None:
        if shutil.which("etcd") is None:
            raise StackError("etcd is not installed: run ./kit setup (Debian package etcd-server)")
        self.client, self.peer = launcher.free_ports(2)
        self.endpoint = f"127.0.0.1:{self.client}"
        self._temporary = data_dir is None
        self.data_dir = Path(tempfile.mkdtemp(prefix="own-etcd-") if data_dir is None else data_dir)
        self.flags, self.progress = flags, progress
        self.process: launcher.Launched | None = None
        self._watchdog: Watchdog | None = None
        atexit.register(self.close)

    @property
    def url(self) -> str:
        """Its client URL: ``https://`` when its flags give it a certificate (``--cert-file``)."""
        return f"{'https' if '--cert-file' in self.flags else 'http'}://{self.endpoint}"

    def _argv(self) -> list[str]:
        peer = f"http://127.0.0.1:{self.peer}"
        return ["etcd", "--name", "own", "--data-dir", str(self.data_dir / "data"),
                "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"own={peer}", *self.flags]

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.alive()

    def start(self) -> "OwnEtcd":
        """Start it (on the data it had, if any) and wait until it serves requests: its log says
        READY once more than before this start (etcd logs it once its server is ready: it has a
        leader and has published itself through it) and its client port takes connections. The port
        alone accepts connections before that: a read sent then waits for the member to elect itself,
        and a restarted member at load 10 made a test's first read after the restart fail with
        DEADLINE_EXCEEDED (a CI run, 2026-12-07). The log, not ``GET /health``, because a TLS etcd
        (``--cert-file``, ``--client-cert-auth``) answers no plain request. Returns itself."""
        if not self.running:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            ready_before = self._readies()
            if self._watchdog is None:   # started first: no etcd of ours without one
                self._watchdog = Watchdog(stop_timeout=STOP_TIMEOUT)
                if self._temporary:
                    self._watchdog.remove(self.data_dir)
            self.process = launcher.start(launcher.Command(self._argv(), self.data_dir / "etcd.log",
                                                           launcher.environment(system=True), self.data_dir,
                                                           name="throwaway etcd", append=True))
            self._watchdog.group(self.process.pid)
            try:
                launcher.wait_ready(lambda: self._readies() > ready_before and tcp_open(self.client, timeout=0.5), bool,
                                    waiting=[self.process],
                                    what=f"the throwaway etcd on {self.endpoint}", timeout=START_TIMEOUT,
                                    interval=0.05)
            except (launcher.Exited, WaitTimeout):
                self.stop()
                raise TimeoutError(f"the throwaway etcd on {self.endpoint} did not answer within "
                                   f"{START_TIMEOUT:g} s (its log: {self.data_dir / 'etcd.log'})") from None
            self.progress(f"throwaway etcd: up on {self.endpoint}")
        return self

    def _readies(self) -> int:
        """How many times its log (kept across starts) says READY."""
        try:
            return (self.data_dir / "etcd.log").read_text(errors="replace").count(READY)
        except FileNotFoundError:
            return 0

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT seconds; the data stays for the next start."""
        if self.running:
            launcher.stop([self.process], STOP_TIMEOUT, kill_wait=STOP_TIMEOUT)
            self.progress(f"throwaway etcd: stopped ({self.endpoint})")

    def kill(self) -> None:
        """SIGKILL (a crash, no goodbye); the data stays for the next start."""
        if self.running:
            launcher.kill([self.process], kill_wait=STOP_TIMEOUT)

    def signal(self, signum: int) -> None:
        """Send ``signum`` (SIGSTOP freezes it: it takes requests and never answers; SIGCONT)."""
        if self.running:
            self.process.signal(signum)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop it, remove its data if it is the temporary folder, dismiss its watchdog (idempotent)."""
        self.stop()
        if self._temporary:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        if self._watchdog is not None:
            self._watchdog.close()
            self._watchdog = None


__all__ = ["OwnEtcd", "free_port", "tcp_open"]
