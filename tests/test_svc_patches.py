"""Importing svc or the kit changes no library; the entry points install svc's patches.

Found: ``import svc`` replaced pika's ``BasicProperties.decode`` (and ``Connection._process_frame``)
and put a finder on ``sys.meta_path``, so a notebook that imported the kit changed pika for the
whole kernel. Now :func:`svc.install_patches` does it, called by ``python -m svc``,
``python -m svc.publish``, ``python -m nirvana``, :func:`nirvana.reset` and the edges before their
first connection. Each case runs in a fresh interpreter of .venv (whose .pth line may put the
etcd3 finder in place at interpreter start: it is taken out first, so the import is what is seen).
"""

import json
import subprocess
import sys

from test_etcd3_import import execute, notebook_kernel

from nirvana import paths

PRELUDE = """
import importlib, json, pkgutil, struct, sys
import pika.connection, pika.spec
sys.meta_path[:] = [f for f in sys.meta_path if getattr(f, "serves", None) != "etcd3.etcdrpc"]
finders = list(sys.meta_path)
ours = lambda: sum(getattr(f, "serves", None) == "etcd3.etcdrpc" for f in sys.meta_path)  # noqa: E731
decode, process_frame = pika.spec.BasicProperties.decode, pika.connection.Connection._process_frame
"""

# A timestamp in milliseconds: pika's own decode raises ValueError "year ... is out of range".
BAD = 'struct.pack(">H", 0x2000) + struct.pack(">I", 12) + b"\\x02tsT" + struct.pack(">Q", 1700000000000)'


def run(code: str) -> dict:
    result = subprocess.run([sys.executable, "-c", PRELUDE + code], cwd=paths.ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.splitlines()[-1])


def test_importing_every_module_of_svc_and_the_kit_leaves_pika_and_the_import_system_as_they_ship():
    seen = run("""
import nirvana, svc
for package in (svc, nirvana):
    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if not module.name.endswith("__main__") and "_pb2" not in module.name:
            importlib.import_module(module.name)
print(json.dumps({"decode": pika.spec.BasicProperties.decode is decode,
                  "process_frame": pika.connection.Connection._process_frame is process_frame,
                  "finders": sys.meta_path == finders, "etcd3": "etcd3" in sys.modules}))
""")
    assert seen == {"decode": True, "process_frame": True, "finders": True, "etcd3": False}


def test_the_entry_points_call_installs_the_patches_and_what_they_are_for_works():
    seen = run(f"""
import nirvana, svc
svc.install_patches()
svc.install_patches()   # idempotent
properties = pika.spec.BasicProperties()
properties.decode({BAD})
import etcd3   # its protoc-3 modules are served regenerated (svc/_etcdrpc)
print(json.dumps({{"decode": pika.spec.BasicProperties.decode is not decode,
                   "process_frame": pika.connection.Connection._process_frame is not process_frame,
                   "finders": ours(),
                   "undecodable": svc.amqp.undecodable(properties).startswith("message properties cannot be decoded"),
                   "etcd3": sys.modules["etcd3.etcdrpc.rpc_pb2"].__file__.endswith("svc/_etcdrpc/rpc_pb2.py")}}))
""")
    assert seen == {"decode": True, "process_frame": True, "finders": 1, "undecodable": True, "etcd3": True}


def test_the_broker_edge_installs_the_patches_before_a_connection_it_opens():
    seen = run("""
from svc import amqp
amqp.parameters("amqp://guest:guest@127.0.0.1:1/%2F")   # every connection of svc and the kit is made with these
print(json.dumps({"decode": pika.spec.BasicProperties.decode is not decode}))
""")
    assert seen == {"decode": True}


def test_the_etcd_edge_serves_etcd3_its_modules_before_its_first_call():
    seen = run("""
from svc import etcd
etcd._rpc()   # what the client does before its first call
print(json.dumps({"finders": ours(), "etcd3": "etcd3.etcdrpc.rpc_pb2" in sys.modules}))
""")
    assert seen == {"finders": 1, "etcd3": True}


def test_a_notebook_that_imports_the_kit_keeps_pika_as_it_ships_until_the_chapters_first_call():
    # Given a real IPython kernel of .venv (as JupyterLab starts one) in notebooks/
    with notebook_kernel() as client:
        # When a cell imports the kit (and its panels), I expect pika's decode as pika ships it
        out = execute(client, "import nirvana, pika.spec\nfrom nirvana import rabbit, services, deadletters\n"
                              "shipped = pika.spec.BasicProperties.decode\n"
                              "print(getattr(shipped, '_svc_tolerant', False))")
        assert out.split() == ["False"]
        # When the chapter's first call runs (nirvana.reset: here with the stack's services and
        # data left alone), I expect svc's tolerant decode installed
        out = execute(client, "nirvana.services.stop_all = lambda **options: []\n"
                              "nirvana.stack.reset = lambda progress: None\n"
                              "nirvana.reset()\n"
                              "print(pika.spec.BasicProperties.decode._svc_tolerant, "
                              "pika.spec.BasicProperties.decode is not shipped)")
        assert out.split()[-2:] == ["True", "True"]
