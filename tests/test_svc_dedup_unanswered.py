"""A claim etcd applied but never answered, against the real etcd.

etcd may apply a transaction and fail to answer it: stopped (SIGTERM) right after the apply, or an
answer later than ETCD_TIMEOUT on a loaded machine. The claimant sees UNAVAILABLE and requeues the
event, yet its claim stands on its lease, which its keepalive keeps alive as long as it lives. A
sibling given the redelivery then finds the event HELD for as long as the claimant lives; only a
redelivery to the claimant itself ends it, and the broker need not ever give it one (seen in the
chaos run: a delivery held for 35 s, once past its 120 s drain, while the claimant sat idle).
"""

import contextlib

from svc import keys
from svc.etcd import Etcd
from svc.dedup import EtcdDedup, Verdict
from svc.errors import DedupUnavailable
from svc.event import parse
from nirvana.testing import wait_for

EVENT = b'{"type": "new_order", "id": "unanswered-1"}'
CLAIM_TTL = 2


class Unanswered:
    """The real etcd client whose transactions, while ``lose`` is set, are applied and waited for,
    their answer then lost (as when etcd stops between the apply and the reply)."""

    def __init__(self, etcd: Etcd) -> None:
        self._etcd, self.lose = etcd, False

    def txn_async(self, request):
        pending = self._etcd.txn_async(request)
        if not self.lose:
            return pending
        pending.result()  # applied
        return _Lost()

    def __getattr__(self, name):
        return getattr(self._etcd, name)


@contextlib.contextmanager
def replicas(claimant_etcd, sibling_etcd, prefix: str):
    """Two open EtcdDedup replicas of "orders" (claimant, sibling), closed afterwards."""
    claimant = EtcdDedup(claimant_etcd, prefix, "orders", claim_ttl=CLAIM_TTL, retention=60)
    sibling = EtcdDedup(sibling_etcd, prefix, "orders", claim_ttl=CLAIM_TTL, retention=60)
    claimant.open()
    sibling.open()
    try:
        yield claimant, sibling
    finally:
        claimant.close()
        sibling.close()


class _Lost:
    def result(self):
        raise DedupUnavailable("etcd transaction failed: UNAVAILABLE (the answer was lost)")


def test_a_claim_applied_but_unanswered_does_not_hold_the_event_from_a_sibling(etcd):
    client, prefix = etcd
    event = parse(EVENT)
    lossy = Unanswered(client)
    with replicas(lossy, client, prefix) as (claimant, sibling):
        # Given a claim etcd applied on the claimant's lease, its answer lost: UNAVAILABLE, requeued
        lossy.lose = True
        assert claimant.claim([event]).result() == [Verdict.UNAVAILABLE]
        lossy.lose = False
        key = keys.dedup_key(prefix, "orders", event.id)
        assert (client.get(key) or b"").startswith(b"claimed ")
        # When the redelivery goes to the sibling, never to the claimant (alive, idle, its lease kept)...
        verdicts = []

        def claimed() -> bool:
            verdicts.append(sibling.claim([event]).result()[0])
            return verdicts[-1] is Verdict.CLAIMED

        # ... I expect the sibling to claim it within a few claim TTLs, not to hold it for as long
        # as the claimant lives.
        wait_for(claimed, "the sibling to claim the event",
                 timeout=3 * CLAIM_TTL, interval=0.2)
        assert sibling.commit([event]).result() == [Verdict.OK]


def test_the_claims_of_windows_given_up_on_a_reconnect_do_not_hold_their_events_from_a_sibling(etcd):
    client, prefix = etcd
    event = parse(EVENT)
    with replicas(client, client, prefix) as (claimant, sibling):
        # Given two windows given up when their broker connection closed (the deliveries back in the
        # queue), the claimant consuming again on a new one: one claimed, the other's claims sent
        # and applied, their answer never read...
        later = parse(EVENT.replace(b"unanswered-1", b"unanswered-2"))
        assert claimant.claim([event]).result() == [Verdict.CLAIMED]
        unread = claimant.claim([later])
        wait_for(lambda: client.get(keys.dedup_key(prefix, "orders", later.id)), "the unread claim in etcd")
        claimant.abandon()
        # ... when the redeliveries go to the sibling, I expect them claimed there within a few claim
        # TTLs, not held for as long as the claimant lives.
        for each in (event, later):
            wait_for(lambda each=each: sibling.claim([each]).result() == [Verdict.CLAIMED],
                     f"the sibling to claim {each.id}", timeout=3 * CLAIM_TTL, interval=0.2)
            assert sibling.commit([each]).result() == [Verdict.OK]
        # and the claimant, given later copies, skips them
        assert claimant.claim([event, later]).result() == [Verdict.SKIPPED] * 2
        del unread
