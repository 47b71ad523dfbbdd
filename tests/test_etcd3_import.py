"""etcd3 stays importable on its own next to svc (a learner poking at etcd from a notebook).

Found with ``import svc`` then ``import etcd3`` in one interpreter: TypeError "Descriptors cannot be
created directly" (etcd3 0.12's protoc-3 modules under protobuf 4+), because svc only swapped in
its regenerated modules when its own client first connected. ``import etcd3`` alone, or before
svc, failed the same way until ``./kit setup`` put svc/_etcdrpc's finder in place at interpreter
start (.venv's reliability_nirvana.pth). Each case runs in a fresh interpreter, or a fresh kernel.
"""

import contextlib
import subprocess
import sys
import uuid

import pytest
from jupyter_client import KernelManager

from nirvana import paths


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=paths.ROOT, capture_output=True, text=True, timeout=60)


def etcd3_round_trip(etcd_endpoint: str) -> tuple[str, str]:
    """Code that puts, gets and deletes a key through etcd3's own client and prints the value read
    and the protobuf implementation; the key."""
    key = f"/kit-etcd3-import-{uuid.uuid4().hex[:8]}"
    host, port = etcd_endpoint.rsplit(":", 1)
    return f"""
from google.protobuf.internal import api_implementation
client = etcd3.client(host={host!r}, port={port})
client.put({key!r}, "1")
print(client.get({key!r})[0].decode(), api_implementation.Type())
client.delete({key!r})
""", key


@pytest.mark.parametrize("imports", ["import svc\nimport etcd3", "import etcd3", "import etcd3\nimport svc",
                                     "import etcd3, svc", "import nirvana\nimport etcd3"],
                         ids=["svc-then-etcd3", "etcd3-alone", "etcd3-then-svc", "etcd3,svc", "nirvana-then-etcd3"])
def test_import_etcd3_in_any_order_works_against_the_real_etcd(etcd_endpoint, imports):
    # Given a fresh interpreter, when it imports etcd3 (alone, before or after the kit) and uses it
    code, _key = etcd3_round_trip(etcd_endpoint)
    result = run(imports + "\n" + code)
    # I expect a put and a get through etcd3's own client, on the fast protobuf
    assert result.returncode == 0, result.stderr[-2000:] + "\n(.venv set up by an older ./kit setup? run it again)"
    assert result.stdout.split() == ["1", "upb"]


def test_svc_works_after_etcd3_was_imported_first(etcd_endpoint):
    # Given etcd3 imported (and used) before svc: svc's client then works on the same modules
    code, key = etcd3_round_trip(etcd_endpoint)
    result = run(f"""
import sys
import etcd3
{code}
from svc import Etcd
from svc.config import parse_endpoints
etcd = Etcd(parse_endpoints({etcd_endpoint!r}))
etcd.put({key!r}.encode(), b"2")
print(etcd.get({key!r}.encode()).decode(), sys.modules["etcd3.etcdrpc.rpc_pb2"].__file__.endswith("svc/_etcdrpc/rpc_pb2.py"))
etcd.delete_prefix({key!r}.encode())
etcd.close()
""")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["1", "upb", "2", "True"]


def test_a_kernel_that_imported_nirvana_imports_etcd3(etcd_endpoint):
    # Given a real IPython kernel of .venv (as JupyterLab starts one) that imported the kit
    code, _key = etcd3_round_trip(etcd_endpoint)
    with notebook_kernel() as client:
        # When a cell imports etcd3 and uses it, I expect it to work
        out = execute(client, "import nirvana\nimport etcd3\n" + code)
        assert out.split() == ["1", "upb"], out


@contextlib.contextmanager
def notebook_kernel():
    """A real IPython kernel of .venv started in notebooks/ (as JupyterLab starts one): its client,
    ready (60 s at most); the kernel is shut down on leaving."""
    manager = KernelManager(kernel_name="python3")
    manager.start_kernel(cwd=str(paths.ROOT / "notebooks"))
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        yield client
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def execute(client, code: str, timeout: float = 60) -> str:
    """Run ``code`` in the kernel; its stdout. AssertionError with the traceback on an error."""
    reply = client.execute_interactive(code, timeout=timeout, output_hook=(out := _Out()))
    assert reply["content"]["status"] == "ok", "\n".join(reply["content"].get("traceback", []))
    return "".join(out.text)


class _Out:
    """Collects a cell's stdout from the kernel's messages."""

    def __init__(self):
        self.text = []

    def __call__(self, message):
        if message["msg_type"] == "stream" and message["content"]["name"] == "stdout":
            self.text.append(message["content"]["text"])


def test_svc_and_etcd3_share_one_set_of_protobuf_modules(etcd_endpoint):
    # Given svc's client used first, then etcd3 imported: one module per name, svc's regenerated one
    result = run(f"""
import sys
from svc import Etcd
from svc.config import parse_endpoints
etcd = Etcd(parse_endpoints({etcd_endpoint!r}))
etcd.count_prefix("/kit-etcd3-import-none/")
etcd.close()
import etcd3
print(sys.modules["etcd3.etcdrpc.rpc_pb2"].__file__)
""")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("svc/_etcdrpc/rpc_pb2.py")
