"""A throwaway etcd on free loopback ports, for chapters that stop and restart etcd.

The one implementation is svc's (:mod:`svc.own_etcd`, which the tests use too); here it only
speaks the kit's language: a missing ``etcd`` binary is a :class:`nirvana.errors.StackError`.
A chapter that shows etcd going away starts one, points its services at :attr:`OwnEtcd.endpoint`,
and stops it at the end (also at interpreter exit); its data lives in a temporary folder that
survives :meth:`OwnEtcd.restart` and is removed by :meth:`OwnEtcd.close`.
"""

from pathlib import Path

from svc import own_etcd
from svc.own_etcd import free_port

from ._wait import Progress, quiet
from .errors import StackError


class OwnEtcd(own_etcd.OwnEtcd):
    """svc's throwaway etcd (:class:`svc.own_etcd.OwnEtcd`: ``start()``, ``stop()``, ``restart()``,
    ``close()``). Raises StackError naming the package when the ``etcd`` binary is missing, and
    TimeoutError from ``start()`` when it does not answer within START_TIMEOUT seconds."""

    def __init__(self, *flags: str, data_dir: str | Path | None = None, progress: Progress = quiet) -> None:
        try:
            super().__init__(*flags, data_dir=data_dir, progress=progress)
        except FileNotFoundError as error:
            raise StackError(str(error)) from None


__all__ = ["OwnEtcd", "free_port"]
