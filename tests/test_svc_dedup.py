"""Deduplication logic that needs no etcd: the claim keepalive's timing, against a stub client."""

from svc.dedup import EtcdDedup


class KeepaliveRecorder:
    """Stands in for svc.Etcd: records the deadline of each keepalive, then stops the loop."""

    timeout = 2.0  # the default ETCD_TIMEOUT

    def __init__(self) -> None:
        self.deadlines: list[float | None] = []
        self.dedup = None

    def keepalive(self, lease_id: int, timeout: float | None = None) -> int:
        self.deadlines.append(timeout)
        self.dedup._stop.set()
        return 1


def test_a_keepalive_ends_before_the_next_is_due():
    # Given CLAIM_TTL=1 with the default 2 s etcd timeout (refreshes every 1/3 s)...
    etcd = KeepaliveRecorder()
    dedup = etcd.dedup = EtcdDedup(etcd, "/t", "orders", claim_ttl=1, retention=60)
    dedup._lease = 7
    # ... when the claim lease is refreshed, I expect each call bounded by the refresh interval,
    # so one slow call cannot outlive the lease it refreshes.
    dedup._keep_claims_alive()
    [deadline] = etcd.deadlines
    assert deadline is not None and deadline <= 1 / 3


class Answer:
    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value


class ExpiringEtcd:
    """Stands in for svc.Etcd: grants lease 7, answers every keepalive "expired" (TTL 0), records
    each transaction and answers it as if every claim succeeded."""

    timeout = 2.0

    def __init__(self) -> None:
        self.requests = []
        self.dedup = None

    def grant(self, ttl: int) -> int:
        return 7

    def keepalive(self, lease_id: int, timeout: float | None = None) -> int:
        return 0

    def alarms_async(self):
        return Answer([])

    def txn_async(self, request):
        from svc import etcd as _etcd
        self.requests.append(request)
        reply = _etcd._rpc().TxnResponse(succeeded=True)
        for _ in request.success:
            reply.responses.add().response_txn.succeeded = True
        return Answer(reply)


def drop_the_lease_while_claiming(monkeypatch, dedup, expire=lambda: None) -> None:
    """The forced interleaving: the keepalive thread finds the claim lease expired (``expire()``
    makes it so) and drops it just after claim() checked it, before the claims' operations are
    written (a pause point in the first operation of the first claim)."""
    from svc import etcd as _etcd

    add_absent, keepalive, paused = _etcd.add_absent, dedup.etcd.keepalive, []

    def once(*args, **kwargs):
        dedup._stop.set()  # one round of the keepalive loop
        return keepalive(*args, **kwargs)

    def pause_point(compares, key):
        if not paused:
            paused.append(key)
            expire()
            monkeypatch.setattr(dedup.etcd, "keepalive", once)
            dedup._keep_claims_alive()  # what the keepalive thread does at that moment
            dedup._stop.clear()
        add_absent(compares, key)

    monkeypatch.setattr(_etcd, "add_absent", pause_point)


def test_a_lease_dropped_between_the_check_and_the_claims_never_leaves_a_claim_without_a_lease(monkeypatch):
    from svc.event import parse

    # Given a claim lease that the keepalive finds expired in the middle of claim()...
    etcd = ExpiringEtcd()
    dedup = etcd.dedup = EtcdDedup(etcd, "/t", "orders", claim_ttl=1, retention=60)
    drop_the_lease_while_claiming(monkeypatch, dedup)
    events = [parse(b'{"type":"new_order","id":"%d"}' % i) for i in range(3)]
    dedup.claim(events).result()
    # ... I expect every claim of that window written on the lease it was checked with, never on
    # none (a claim without a lease never expires), and its value naming that same lease.
    puts = [op.request_txn.success[0].request_put for request in etcd.requests for op in request.success]
    assert len(puts) == 3
    assert [(put.lease, put.value.split()[-1]) for put in puts] == [(7, b"7")] * 3
    assert dedup._lease == 0  # dropped: the next window takes a new one
