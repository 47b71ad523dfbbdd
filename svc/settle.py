"""Settling a consumer's deliveries on the broker: ack, dead-letter, hold, keep, requeue.

A window's outcomes (svc/outcome.py) become broker calls here. Dead letters are published with
confirms and only then acked; a dead letter the broker refuses (a full dead-letter queue, no
queue bound) is kept unacked and published again with backoff: only that message waits.
Deliveries a sibling's claim holds are set aside unacked (svc/held.py). Processed and skipped
ones are acked (svc/acks.py: one ack "multiple" when it may). The rest are requeued, after a
growing wait while etcd is away (fail closed); on a quorum queue as a confirmed copy at the tail
(svc/requeue.py). pika is used from the consumer's thread only: the Consumer that owns this.
"""

import dataclasses
import logging
import time

import pika

from . import amqp, metrics, requeue, topology
from .acks import Open
from .amqp import BROKER_ERRORS, Action
from .backoff import Backoff
from .config import Config
from .held import Held
from .letters import letter_properties
from .outcome import Outcome, Settlement
from .protocols import Meter

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Kept:
    """A delivery whose dead letter the broker refused: kept unacked, published again at ``due``
    (``time.monotonic()`` seconds), each try ``backoff`` later than the last."""

    method: pika.spec.Basic.Deliver
    properties: pika.BasicProperties
    body: bytes
    reason: str
    due: float = 0.0
    backoff: Backoff = dataclasses.field(default_factory=Backoff)


class Settler:
    """Settles the deliveries of one consumer of ``config``'s service, counting into ``meter``;
    ``sleep(seconds)`` waits while the consumer's connection is served (heartbeats).

    Per broker channel (``begin``): the deliveries not settled yet (``open``), those held for
    siblings' claims (``held``), the refused dead letters kept (``kept``), the confirmed channel
    that dead letters and tail copies go on (``dead``) and the user the broker takes as their
    user_id (``user``). Across channels: the backoff of requeues while etcd is away.
    """

    def __init__(self, config: Config, meter: Meter, sleep) -> None:
        self.config, self.meter, self._sleep = config, meter, sleep
        self.queue = topology.queue_name(config.service, config.exchange)
        self.open = Open()                # deliveries not yet acked or requeued, by channel (svc/acks.py)
        self.held: Held | None = None     # deliveries a sibling's claim holds wait aside (unacked)
        self.kept: list[Kept] = []
        self.dead = None                  # the confirmed channel: dead letters, copies requeued at the tail
        self.user: str | None = None      # AMQP_URL's user of the node connected to
        self._requeue_backoff = Backoff()

    def begin(self, held: Held, user: str | None) -> None:
        """A new broker channel: nothing open, held or kept yet (what an earlier one held unacked
        went back to the queue with it). ``dead`` is set once the channel's topology is declared."""
        self.open, self.held, self.kept, self.dead, self.user = Open(), held, [], None, user

    def next_due(self) -> float | None:
        """When the first kept dead letter is due (``time.monotonic()`` seconds), None if none is."""
        return min((kept.due for kept in self.kept), default=None)

    def settle(self, batch, window, outcomes) -> None:
        """Settle ``batch`` (``(method, properties, body)`` deliveries) by ``outcomes``: the
        window's, one per delivery whose properties decoded, in order. A delivery whose properties
        pika could not decode, or refused unread (``amqp.refuse``), is dead-lettered with its reason."""
        outcomes = iter(outcomes)
        settled = [(delivery, _dead(reason) if reason else next(outcomes))
                   for delivery, reason in ((d, amqp.undecodable(d[1])) for d in batch)]
        for (_method, properties, _body), outcome in settled:
            if amqp.undecodable(properties):
                self.meter.incr(metrics.invalid(self.config.service))  # the worker is idle now
                log.warning("%s: %s; dead-lettered", self.config.service, outcome.reason)
        acks, requeues = [], []
        for (method, properties, body), outcome in settled:
            if outcome.action is Settlement.REQUEUE:
                requeues.append(((method, properties, body), outcome))
            elif outcome.action is Settlement.HOLD:
                if not self.held.hold(outcome.key, (method, properties, body), owner=method.consumer_tag):
                    requeues.append(((method, properties, body), outcome))  # waited once already: let any replica have it
            elif outcome.action is not Settlement.DEAD or self.dead_letter(Kept(method, properties, body, outcome.reason)):
                acks.append(method)
        # An ack that fails because the connection dropped is safe: the broker redelivers, and
        # the done mark (with dedup) turns the redelivery into a skip. "multiple": svc/acks.py.
        self.open.ack(acks)
        if log.isEnabledFor(logging.DEBUG):
            _trace(window, settled, {id(method) for method in acks})
        if requeues:
            self.requeue(requeues)

    def dead_letter(self, letter: Kept) -> bool:
        """Publish ``letter`` to the dead-letter exchange and wait for the broker's confirm; True if
        confirmed. The caller acks the original only then, so a failed publish loses nothing. A
        dead letter the broker refuses (nack: a full dead-letter queue; returned: no queue bound) is
        kept unacked and published again with backoff; only that message waits. Any other broker
        error is raised (BROKER_ERRORS: the consumer reopens the channel or reconnects)."""
        method = letter.method
        properties = letter_properties(letter.properties, {topology.REASON_HEADER: letter.reason,
                                                           topology.SERVICE_HEADER: self.config.service,
                                                           topology.ROUTING_KEY_HEADER: method.routing_key}, self.user)
        try:
            self.dead.basic_publish(topology.dead_letter_exchange(self.config.exchange), method.routing_key,
                                    letter.body, properties, mandatory=True)
        except BROKER_ERRORS as error:
            if amqp.classify(error) is not Action.MESSAGE:
                raise
            self._keep(letter, error)
            return False
        log.debug("dead-lettered %d bytes: %s", len(letter.body), letter.reason)
        return True

    def _keep(self, letter: Kept, error) -> None:
        """Hold a refused dead letter (unacked) until its next try; counted and logged each time."""
        delay = letter.backoff.next()
        letter.due = time.monotonic() + delay
        self.kept.append(letter)
        self.meter.incr(metrics.dead_letter_refused(self.config.service))
        self.meter.flush()
        log.warning("%s: dead letter refused by RabbitMQ (%s); kept unacked, publishing it again in %.1f s "
                    "(%d kept)", self.config.service, amqp.translate(error, "dead-lettering"), delay, len(self.kept))

    def retry_kept(self) -> None:
        """Publish again the kept dead letters that are due; ack each one the broker confirms."""
        now = time.monotonic()
        for letter in [k for k in self.kept if k.due <= now]:
            self.kept.remove(letter)
            if self.dead_letter(letter):
                self.open.ack([letter.method])
                log.info("%s: a kept dead letter was published and acked", self.config.service)

    def requeue(self, requeues) -> None:
        """Give ``requeues`` (``(delivery, outcome)`` pairs) back to the queue, after a growing wait
        when an outcome asks for backoff (etcd away: fail closed), else at once."""
        if any(outcome.backoff for _, outcome in requeues):
            delay = self._requeue_backoff.next()
            log.warning("etcd unavailable: %d events requeued after %.1f s", len(requeues), delay)
        else:
            delay = 0.0
            self._requeue_backoff.reset()
        self._sleep(delay)
        for delivery, _ in requeues:
            method, channel = delivery[0], self.open.channel(delivery[0])
            if self.config.queue_type == "quorum" and requeue.at_tail(self.dead, self.queue, *delivery, user=self.user):
                # Its copy is confirmed at the tail: acking the original loses nothing, and the quorum
                # queue's delivery limit stays for consumers that die on it (svc/requeue.py).
                channel.basic_ack(method.delivery_tag)
            else:
                # Not done, not acked: back to the queue for another try (fail closed).
                channel.basic_nack(method.delivery_tag, requeue=True)
            self.open.settled(method)


def _trace(window, settled, acked: set) -> None:
    """One DEBUG line per delivery, by event id: how it was settled (the window holds only the
    deliveries whose properties decoded, in order)."""
    events = iter(window.events.get(i) for i in range(len(window.outcomes)))
    for (method, properties, _body), outcome in settled:
        event = None if amqp.undecodable(properties) else next(events, None)
        what = f"event {event.id[:64]!r}" if event else f"delivery {method.delivery_tag} (not an event)"
        how = "requeued (not acked)" if outcome.action is Settlement.REQUEUE else (
            ("dead-lettered, " if outcome.action is Settlement.DEAD else "") + ("acked" if id(method) in acked
                                                                         else "kept unacked"))
        log.debug("%s: %s", what, how)


def _dead(reason: str) -> Outcome:
    return Outcome(Settlement.DEAD, reason)
