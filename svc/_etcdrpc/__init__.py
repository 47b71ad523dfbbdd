"""etcd3's protobuf modules, regenerated for protobuf 4+ (see ``_generate.py``), served under etcd3's names.

etcd3 0.12.0 imports ``etcd3.etcdrpc.{kv,auth,rpc}_pb2``, made by protoc 3.x, which protobuf 4+
refuses ("TypeError: Descriptors cannot be created directly"). :func:`install` puts a finder first
on ``sys.meta_path`` that answers exactly those three names with this folder's regenerated files,
so ``import etcd3`` works in any interpreter that has called it (``svc.etcd.install_patches()``, the
entry points' call, or svc's etcd client before its first call): svc's own client, and a learner
importing etcd3 in a notebook after the kit's setup. Importing svc does not call it. Each file is loaded once, under etcd3's name
(their descriptors say ``etcd3.etcdrpc``); nothing is imported until etcd3 itself is.

etcd3 imported *before* svc, or without it (``import etcd3`` alone), needs the finder in place
at interpreter start: ``./kit setup`` puts a line in .venv's ``reliability_nirvana.pth`` that
loads this file alone (stdlib only, not the svc package: interpreter start stays fast) and calls
:func:`install` (see :data:`STARTUP_LINE`). svc's own call then finds the finder there already.
"""

import importlib.util
import os.path
import sys

MODULES = ("kv_pb2", "auth_pb2", "rpc_pb2")
PACKAGE = "etcd3.etcdrpc"
_HERE = os.path.dirname(os.path.realpath(__file__))   # os.path, not pathlib: cheap at start


class _RegeneratedModules:
    """Finds ``etcd3.etcdrpc.<one of MODULES>`` in this folder; every other name is left alone (a
    meta path finder: an object with ``find_spec``; importlib.abc is not imported, it costs
    interpreter start tens of milliseconds)."""

    serves = PACKAGE   # how install() recognises a finder put in place by another copy of this file

    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.rpartition(".")
        if package != PACKAGE or name not in MODULES:
            return None
        return importlib.util.spec_from_file_location(fullname, os.path.join(_HERE, f"{name}.py"))


_FINDER = _RegeneratedModules()


def install() -> None:
    """Serve etcd3's protobuf modules from here from now on (idempotent: a finder already put in
    place, by svc or at interpreter start through the .pth line, is kept)."""
    if not any(getattr(finder, "serves", None) == PACKAGE for finder in sys.meta_path):
        sys.meta_path.insert(0, _FINDER)


# The .pth line ``./kit setup`` writes (with this file's path for {init}): a .pth line that starts
# with ``import`` is run at interpreter start; this one loads this file under a name of its own.
STARTUP_LINE = ("import importlib.util as _u; _s = _u.spec_from_file_location('svc_etcdrpc_startup', {init!r}); "
                "_m = _u.module_from_spec(_s); _s.loader.exec_module(_m); _m.install()")
