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
