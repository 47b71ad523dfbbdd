"""etcd3's protobuf modules, regenerated for protobuf 4+ (see ``_generate.py``), served under etcd3's names.

etcd3 0.12.0 imports ``etcd3.etcdrpc.{kv,auth,rpc}_pb2``, made by protoc 3.x, which protobuf 4+
refuses ("TypeError: Descriptors cannot be created directly"). :func:`install` puts a finder first
on ``sys.meta_path`` that answers exactly those three names with this folder's regenerated files,
so ``import etcd3`` works in any interpreter that has imported svc: svc's own client, and a
learner importing etcd3 in a notebook after the kit. Each file is loaded once, under etcd3's name
(their descriptors say ``etcd3.etcdrpc``); nothing is imported until etcd3 itself is.
"""

import importlib.abc
import importlib.util
import sys
from pathlib import Path

MODULES = ("kv_pb2", "auth_pb2", "rpc_pb2")
PACKAGE = "etcd3.etcdrpc"
_HERE = Path(__file__).resolve().parent


class _RegeneratedModules(importlib.abc.MetaPathFinder):
    """Finds ``etcd3.etcdrpc.<one of MODULES>`` in this folder; every other name is left alone."""

    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.rpartition(".")
        if package != PACKAGE or name not in MODULES:
            return None
        return importlib.util.spec_from_file_location(fullname, _HERE / f"{name}.py")


_FINDER = _RegeneratedModules()


def install() -> None:
    """Serve etcd3's protobuf modules from here from now on (idempotent)."""
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
