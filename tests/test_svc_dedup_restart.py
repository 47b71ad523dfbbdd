"""Chapter 3's narrative, checked against the real etcd: after a restart, the claim alone skips a
repeat (create-if-absent finds the done mark); the ids imported at start are a cache that saves
that round trip. Each test uses its own etcd prefix and deletes it afterwards."""



from svc import keys
from svc.etcd import Etcd
from svc.dedup import EtcdDedup, Verdict
from svc.event import parse

EVENT = b'{"type": "new_order", "id": "123"}'


class CountingEtcd:
    """The real etcd client, counting the transactions sent (the round trips a claim costs)."""

    def __init__(self, etcd: Etcd) -> None:
        self._etcd, self.txns = etcd, 0

    def txn_async(self, request):
        self.txns += 1
        return self._etcd.txn_async(request)

    def __getattr__(self, name):
        return getattr(self._etcd, name)


def started(client, prefix: str) -> EtcdDedup:
    """A service's dedup as ``python -m svc`` opens it at start (the import included)."""
    dedup = EtcdDedup(CountingEtcd(client), prefix, "orders", claim_ttl=10, retention=60)
    dedup.open()
    return dedup


def test_after_a_restart_the_claim_skips_a_repeat_and_the_import_only_saves_the_round_trip(etcd):
    client, prefix = etcd
    event = parse(EVENT)
    # Given orders processed event 123 with dedup on (claim, then done mark and effect)
    first = started(client, prefix)
    assert first.claim([event]).result() == [Verdict.CLAIMED]
    assert first.commit([event]).result() == [Verdict.OK]
    first.close()
    encoded = keys.encode_id("123").encode()

    # When a restarted service has imported nothing (its cache emptied), I expect the repeat skipped
    # anyway: the create-if-absent claim finds the done mark, one transaction sent
    forgetful = started(client, prefix)
    forgetful.done.clear()
    assert forgetful.claim([event]).result() == [Verdict.SKIPPED]
    assert forgetful.etcd.txns == 1
    assert encoded in forgetful.done   # and it remembers the answer for the next repeat
    forgetful.close()

    # When it imports its done ids at start (what svc does), the repeat is skipped from memory,
    # no transaction sent: the import is a cache saving that round trip
    restarted = started(client, prefix)
    assert encoded in restarted.done
    assert restarted.claim([event]).result() == [Verdict.SKIPPED]
    assert restarted.etcd.txns == 0
    restarted.close()
