"""etcd3 stays importable on its own next to svc (a learner poking at etcd from a notebook).

Found with ``import svc`` then ``import etcd3`` in one interpreter: TypeError "Descriptors cannot be
created directly" (etcd3 0.12's protoc-3 modules under protobuf 4+), because svc only swapped in
its regenerated modules when its own client first connected. Each case runs in a fresh interpreter.
"""

import subprocess
import sys
import uuid

from nirvana import paths


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=paths.ROOT, capture_output=True, text=True, timeout=60)


def test_import_svc_then_etcd3_works_against_the_real_etcd(etcd_endpoint):
    # Given a fresh interpreter that imported svc, when it imports etcd3 and uses it on its own
    key = f"/kit-etcd3-import-{uuid.uuid4().hex[:8]}"
    host, port = etcd_endpoint.rsplit(":", 1)
    result = run(f"""
import svc
import etcd3
from google.protobuf.internal import api_implementation
client = etcd3.client(host={host!r}, port={port})
client.put({key!r}, "1")
print(client.get({key!r})[0].decode(), api_implementation.Type())
client.delete({key!r})
""")
    # I expect a put and a get through etcd3's own client, on the fast protobuf
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["1", "upb"]


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
