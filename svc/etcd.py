"""The one place that deals with etcd3, gRPC and protobuf.

etcd3 0.12.0 ships protobuf modules made by protoc 3.x, which protobuf 4+ refuses to import.
``svc/_etcdrpc`` holds the same descriptors regenerated for protobuf 4+ (see its ``_generate.py``)
and serves them under etcd3's names to whoever imports etcd3 after ``install_patches()`` (called
before svc's first etcd call), so etcd3 runs on the fast upb protobuf. Every gRPC or etcd3 error leaves this module as DedupUnavailable (etcd away or
busy: retried), or as EtcdRefused when etcd answered with a refusal no retry cures (a login
required or wrong, a permission denied, a TLS handshake that fails). One endpoint's channel,
its TLS and etcd's login live in svc/_etcdchannel.py.
"""

import logging
import threading

from . import _etcdrpc
from ._etcdchannel import GRPC_OPTIONS, _client, _Client, _describe, _refusal, _rpc, _tls_hint  # noqa: F401
from .errors import DedupUnavailable, EtcdRefused

log = logging.getLogger(__name__)


def install_patches() -> None:
    """From now on ``import etcd3`` finds its protobuf modules in svc/_etcdrpc, whoever imports it
    (svc's client, or a learner poking at etcd from a notebook). Idempotent; called by the entry
    points and before etcd3 is first imported (``_rpc``), never at import: importing svc leaves
    ``sys.meta_path`` as it was."""
    _etcdrpc.install()


def _bytes(text) -> bytes:
    return text if isinstance(text, bytes) else text.encode()


def prefix_end(prefix) -> bytes:
    """The range end that covers every key starting with ``prefix``."""
    key = bytearray(_bytes(prefix))
    while key and key[-1] == 0xFF:
        key.pop()
    if not key:
        return b"\0"
    key[-1] += 1
    return bytes(key)


# -- transaction builders: fill protobuf messages in place (cheap), so transactions may nest --

def new_txn():
    return _rpc().TxnRequest()


def add_put(ops, key: bytes, value: bytes, lease: int = 0) -> None:
    put = ops.add().request_put
    put.key, put.value = key, value
    if lease:
        put.lease = lease


def add_delete(ops, key: bytes) -> None:
    ops.add().request_delete_range.key = key


def add_get(ops, key: bytes) -> None:
    ops.add().request_range.key = key


def add_txn(ops):
    """A nested transaction appended to ``ops``; fill its compare, success and failure."""
    return ops.add().request_txn


def add_absent(compares, key: bytes) -> None:
    """Compare: the key does not exist (its create revision is 0)."""
    compare = compares.add()
    compare.key, compare.target, compare.result = key, _CREATE, _EQUAL
    compare.create_revision = 0


def add_value_is(compares, key: bytes, value: bytes) -> None:
    compare = compares.add()
    compare.key, compare.target, compare.result = key, _VALUE, _EQUAL
    compare.value = value


_CONNECTION_CODES = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED", "UNKNOWN", "INTERNAL"}
_CREATE, _VALUE, _EQUAL = 1, 3, 0  # etcdserverpb.Compare.CompareTarget.CREATE / VALUE, CompareResult.EQUAL


class Etcd:
    """A small etcd v3 client over gRPC; fails over between endpoints.

    Each call has a deadline (``timeout``); a failure raises DedupUnavailable and moves the next
    call to the next endpoint, so an etcd cluster keeps serving when one member is down; a refusal
    no retry cures raises EtcdRefused. ``access`` (svc.config.EtcdAccess): etcd's user and
    password, TLS with a CA and a client certificate; None for plain, open etcd.
    """

    def __init__(self, endpoints, timeout: float = 2.0, access=None) -> None:
        self._endpoints = tuple(endpoints)
        self._timeout = timeout
        self._access = access
        self._index = 0
        self._client = None
        self._lock = threading.Lock()

    @property
    def timeout(self) -> float:
        """Seconds each call may take before it counts as failed."""
        return self._timeout

    @property
    def endpoint(self) -> str:
        host, port = self._endpoints[self._index]
        return f"{host}:{port}"

    def _stubs(self) -> _Client:
        with self._lock:
            if self._client is None:
                host, port = self._endpoints[self._index]
                self._client = _Client(host, port, self._access)
            return self._client

    def _call(self, what: str, stub_name: str, method: str, request, timeout: float | None = None):
        return self._with_login(what, lambda client: getattr(getattr(client, stub_name), method)(
            request, timeout or self._timeout))

    def _with_login(self, what: str, call):
        """``call(client)`` after the login, sent again once if etcd says our token went stale."""
        client = self._stubs()
        for attempt in (1, 2):
            try:
                client.login(self._timeout)
                return call(client)
            except Exception as error:  # grpc.RpcError: etcd is unusable, or refused us
                if attempt == 1 and client.stale(error):
                    continue
                raise self._failed(what, client, error) from None

    def _send(self, what: str, send, read=None) -> "_Pending":
        """Start ``send(client)`` (a call's future) after the login; its reply comes with ``result()``."""
        sent = []
        future = self._with_login(what, lambda client: sent.append(client) or send(client))
        return _Pending(self, sent[-1], future, what, read, send)

    def _failed(self, what: str, client, error: Exception) -> Exception:
        """The error to raise for a failed call (after failing over): EtcdRefused when etcd refused
        us for good (login, permission, TLS), LeaseNotFound when the request named a lease etcd
        no longer has, TxnTooLarge when it was over the server's limits, NoSpace when etcd's
        space quota is exceeded, else DedupUnavailable."""
        endpoint = self.endpoint   # the one that failed, named before the fail-over moves on
        refusal = _refusal(error, self._access)
        if refusal:
            return EtcdRefused(f"etcd at {endpoint} refused svc's {what}: {refusal}")
        kind = _kind(error)
        if kind is DedupUnavailable or kind is LeaseNotFound:
            self._fail_over(client, error)  # the others are said by the caller, once
        return kind(f"etcd {what} at {endpoint} failed: {_describe(error)}{_tls_hint(error, self._access)}")

    def _fail_over(self, client, error: Exception | None = None) -> None:
        """After a connection failure, the next call goes to the next endpoint. An error etcd
        answered (a refused request) says nothing about the connection: it is logged instead."""
        code = getattr(error, "code", None)
        if callable(code) and code().name not in _CONNECTION_CODES:
            log.warning("etcd refused a request: %s", _describe(error))
            return
        with self._lock:
            if self._client is client:
                self._client = None
                self._index = (self._index + 1) % len(self._endpoints)
        client.close()

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    # -- key-value ----------------------------------------------------------------------------

    def txn(self, request):
        return self.txn_async(request).result()

    def txn_async(self, request) -> "_Pending":
        """Send a transaction now; ``result()`` waits for it (the caller works meanwhile)."""
        return self._send("transaction", lambda client: client.kvstub.Txn.future(request, self._timeout))

    def put(self, key, value, lease: int = 0) -> None:
        self._call("put", "kvstub", "Put", _rpc().PutRequest(key=_bytes(key), value=_bytes(value), lease=lease))

    def get(self, key) -> bytes | None:
        kvs = self._call("get", "kvstub", "Range", _rpc().RangeRequest(key=_bytes(key))).kvs
        return kvs[0].value if kvs else None

    def count_prefix(self, prefix) -> int:
        request = _rpc().RangeRequest(key=_bytes(prefix), range_end=prefix_end(prefix), count_only=True)
        return self._call("count", "kvstub", "Range", request).count

    def count_prefix_at(self, prefix) -> tuple[int, int]:
        """How many keys are under ``prefix`` (no values read) and the revision counted at."""
        request = _rpc().RangeRequest(key=_bytes(prefix), range_end=prefix_end(prefix), count_only=True)
        response = self._call("count", "kvstub", "Range", request)
        return response.count, response.header.revision

    def delete_prefix(self, prefix) -> int:
        request = _rpc().DeleteRangeRequest(key=_bytes(prefix), range_end=prefix_end(prefix))
        return self._call("delete", "kvstub", "DeleteRange", request).deleted

    def scan_prefix(self, prefix, page: int = 1000):
        """Yield ``(key, value)`` pages of every key under ``prefix`` at one revision.

        Returns (as the generator's value) that revision, from which a watch can continue.
        """
        key, end, revision = _bytes(prefix), prefix_end(prefix), 0
        while True:
            request = _rpc().RangeRequest(key=key, range_end=end, limit=page, revision=revision)
            response = self._call("range", "kvstub", "Range", request)
            revision = revision or response.header.revision
            yield [(kv.key, kv.value) for kv in response.kvs]
            if not response.more or not response.kvs:
                return revision
            key = response.kvs[-1].key + b"\0"

    # -- leases -------------------------------------------------------------------------------

    def grant(self, ttl: int) -> int:
        return self._call("lease grant", "leasestub", "LeaseGrant", _rpc().LeaseGrantRequest(TTL=ttl)).ID

    def keepalive(self, lease_id: int, timeout: float | None = None) -> int:
        """Refresh a lease within ``timeout`` (default: the client's); its remaining TTL (0 or
        less: it has expired)."""
        request = _rpc().LeaseKeepAliveRequest(ID=lease_id)
        return self._with_login("lease keepalive", lambda client: next(iter(
            client.leasestub.LeaseKeepAlive(iter([request]), timeout or self._timeout))).TTL)

    def revoke(self, lease_id: int) -> None:
        self._call("lease revoke", "leasestub", "LeaseRevoke", _rpc().LeaseRevokeRequest(ID=lease_id))

    def leases(self) -> list[int]:
        """The id of every lease etcd holds (what an operator lists before revoking one)."""
        reply = self._call("lease list", "leasestub", "LeaseLeases", _rpc().LeaseLeasesRequest())
        return [lease.ID for lease in reply.leases]

    # -- maintenance --------------------------------------------------------------------------

    def compact_and_defragment(self, timeout: float = 120.0, defragment: bool = True) -> list[int]:
        """Give back the space of deleted keys and old revisions, as an operator does (etcd's
        maintenance guide): compact the history up to the current revision (physically: done when
        it returns), then defragment every endpoint (each member frees its own file; skipped with
        ``defragment=False``). Returns each endpoint's database size in bytes afterwards.
        ``timeout``: seconds per call (a defragment rewrites the whole file). Raises DedupUnavailable."""
        rpc, sizes = _rpc(), []
        for host, port in self._endpoints:
            client = _Client(host, port, self._access)
            try:
                client.login(timeout)
                if not sizes:  # once, for the cluster; a revision already compacted is fine
                    revision = client.kvstub.Range(rpc.RangeRequest(key=b"\0"), timeout).header.revision
                    try:
                        client.kvstub.Compact(rpc.CompactionRequest(revision=revision, physical=True), timeout)
                    except Exception as error:  # grpc.RpcError
                        if "compacted" not in _describe(error):
                            raise
                if defragment:
                    client.maintenancestub.Defragment(rpc.DefragmentRequest(), timeout)
                sizes.append(client.maintenancestub.Status(rpc.StatusRequest(), timeout).dbSize)
            except Exception as error:  # grpc.RpcError: this member did not answer
                raise DedupUnavailable(f"etcd compact and defragment at {host}:{port} failed: {_describe(error)}") from None
            finally:
                client.close()
        return sizes

    def status(self) -> tuple[int, int]:
        """(the member's id, its leader's id; 0: no leader known) from etcd's Maintenance.Status."""
        reply = self._call("status", "maintenancestub", "Status", _rpc().StatusRequest())
        return reply.header.member_id, reply.leader

    def alarms(self) -> list[str]:
        """The names of the alarms raised in the cluster (``NOSPACE``, ``CORRUPT``), each once;
        ``etcdctl alarm list`` shows the same."""
        return self.alarms_async().result()

    def alarms_async(self) -> "_Pending":
        """Ask for the alarm list now; ``result()`` waits for the names (see ``alarms``)."""
        request = _rpc().AlarmRequest(action=_rpc().AlarmRequest.GET)
        return self._send("alarm list", lambda client: client.maintenancestub.Alarm.future(request, self._timeout),
                          _alarm_names)

    # -- watch --------------------------------------------------------------------------------

    def watch_prefix(self, prefix, start_revision: int):
        """A started watch of every change under ``prefix`` from ``start_revision``.

        Iterate it for ``(is_put, key, value, revision)``; ``cancel()`` ends it. Raises
        DedupUnavailable when the stream breaks (the caller resumes from the last revision).
        """
        rpc = _rpc()
        create = rpc.WatchCreateRequest(key=_bytes(prefix), range_end=prefix_end(prefix),
                                        start_revision=start_revision)
        return _Watch(self, rpc.WatchRequest(create_request=create))


class Compacted(DedupUnavailable):
    """The watch's start revision was compacted away: read the state again, then watch on."""


class LeaseNotFound(DedupUnavailable):
    """A request named a lease etcd no longer has (revoked, expired, or etcd restored from a
    backup): every later request with that lease fails too, so take a new one."""


class TxnTooLarge(DedupUnavailable):
    """etcd refused a transaction over its limits (``--max-txn-ops``: operations per transaction,
    128 by default; ``--max-request-bytes``: 1.5 MiB by default): send it in smaller parts."""


class NoSpace(DedupUnavailable):
    """etcd's space quota is exceeded (the NOSPACE alarm): it refuses writes until an operator
    compacts, defragments and disarms the alarm."""


NOSPACE_HELP = ("etcd is out of space (NOSPACE alarm: its --quota-backend-bytes is exceeded); svc processes no "
                "event until an operator frees space: `etcdctl compact <current revision>`, "
                "`etcdctl defrag`, then `etcdctl alarm disarm` (see etcd's maintenance guide, \"Space quota\")")


class _Pending:
    """A call in flight; ``result()`` waits for its reply (read by ``read``), sending it again
    once through ``send(client)`` if etcd said our token went stale."""

    def __init__(self, etcd: Etcd, client, future, what: str = "transaction", read=None, send=None) -> None:
        self._etcd, self._client, self._future, self._what, self._read = etcd, client, future, what, read
        self._send = send

    def result(self):
        try:
            reply = self._future.result()
        except Exception as error:
            if self._send is None or not self._client.stale(error):
                raise self._etcd._failed(self._what, self._client, error) from None
            reply = self._etcd._with_login(self._what, lambda client: self._send(client).result())
        return reply if self._read is None else self._read(reply)


def _alarm_names(reply) -> list[str]:
    return sorted({_rpc().AlarmType.Name(member.alarm) for member in reply.alarms if member.alarm})


class _Watch:
    def __init__(self, etcd: Etcd, request) -> None:
        self._etcd = etcd
        self._client = etcd._with_login("watch", lambda client: client)
        stub = _rpc().WatchStub(self._client.channel)
        self._stop = threading.Event()
        self._call = stub.Watch(self._requests(request))

    def _requests(self, first):
        yield first
        self._stop.wait()  # keep the request stream open until cancelled

    def __iter__(self):
        put = 0  # mvccpb.Event.EventType.PUT
        try:
            for response in self._call:
                if response.compact_revision:
                    raise Compacted(f"etcd compacted past the watch's revision ({response.compact_revision})")
                for event in response.events:
                    kv = event.kv   # one wrapper per event, not three (two events per event svc handles)
                    yield event.type == put, kv.key, kv.value, kv.mod_revision
        except Compacted:
            raise
        except Exception as error:
            if self._stop.is_set():
                return
            if self._client.stale(error):   # the next watch logs in again
                raise DedupUnavailable(f"etcd watch broke: {_describe(error)}") from None
            raise self._etcd._failed("watch", self._client, error) from None

    def cancel(self) -> None:
        self._stop.set()
        self._call.cancel()


# (gRPC status, words of etcd's message) -> the error svc raises; etcd's messages are in
# etcdserver/api/v3rpc/rpctypes/error.go; "larger than max" is gRPC's own receive limit
# (--max-request-bytes plus 512 KiB).
_KINDS = (("NOT_FOUND", "lease not found", LeaseNotFound),
          ("INVALID_ARGUMENT", "too many operations in txn request", TxnTooLarge),
          ("INVALID_ARGUMENT", "request is too large", TxnTooLarge),
          ("RESOURCE_EXHAUSTED", "larger than max", TxnTooLarge),
          ("RESOURCE_EXHAUSTED", "database space exceeded", NoSpace))


def _kind(error: Exception) -> type:
    """The DedupUnavailable subclass for a gRPC error (see _KINDS)."""
    code, details = getattr(error, "code", None), getattr(error, "details", None)
    if callable(code) and callable(details):
        name, text = code().name, details() or ""
        for status, words, kind in _KINDS:
            if name == status and words in text:
                return kind
    return DedupUnavailable
