"""What the processor decides for one delivery, and how the consumer settles it on the broker."""

import dataclasses
import enum


class Settlement(enum.StrEnum):
    """How a delivery is settled; the values are what logs and traces print."""

    ACK = "ack"            # processed or skipped: acked
    DEAD = "dead"          # never processable: dead-lettered (confirmed), then acked
    REQUEUE = "requeue"    # not done now: back to the queue (nack with requeue)
    HOLD = "hold"          # a sibling's claim holds it: set aside unacked (svc.held)


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What to do with one delivery. ``reason`` is set for dead letters, ``backoff`` for requeues
    that wait for etcd (longer, growing), ``key`` for deliveries held while a sibling's claim on
    that etcd key lives (set aside, see svc.held)."""

    action: Settlement
    reason: str = ""
    backoff: bool = False
    key: bytes = b""


ACK = Outcome(Settlement.ACK)
REQUEUE = Outcome(Settlement.REQUEUE)
UNAVAILABLE = Outcome(Settlement.REQUEUE, backoff=True)
