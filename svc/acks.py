"""Which deliveries of a consumer are not settled yet, per broker channel, and their acks.

A delivery tag belongs to the channel it came on (AMQP 0-9-1 numbers them per channel), and one
ack "multiple" covers every unsettled tag of that channel up to its own (basic.ack): it is used
only when all of those are acked by it. A lower tag may be open elsewhere (a held delivery come
due in the next window, a kept dead letter, one held again), and acking it before its work is
done loses it (and its later ack or nack is an unknown tag: the broker closes the channel).

So a held delivery's low tag rules out an ack "multiple" on its channel for as long as it waits
(up to CLAIM_TTL): every later window's deliveries are then acked one by one, hundreds of ack
frames a window that the broker settles one at a time (bench_svc.py's dead sibling: a third of
the survivor's time, and its deliveries came in a trickle). The consumer hands over to a new
channel (Consumer._consume_again): the held deliveries stay open on the old one, where they are
settled when they come due, and the new channel's windows are acked with one "multiple" again.
At most HANDOVER_CHANNELS (svc/consumer.py) consume or hold at once: with a small prefetch every
held delivery would call for a channel of its own.

On an old channel (no longer consuming) the deliveries done above a held one are not acked one by
one either: their acks wait (``_done``) until no held tag is open below them, then go as one ack
"multiple" (when the held ones come due, or one by one when the consumer stops: ``flush``). Acked
one by one at once, a dead sibling's window of 500 held left the 1,000 deliveries the old channel
had been sent to be acked in 1,000 frames just after the hand-over, and the queue settled them
before it sent the new consumer anything: the survivor stood idle for 0.3-0.5 s at load 4
(bench_svc.py's dead sibling, 2026-12-07, svc's own timings). A crash meanwhile returns them to the
queue, where their done marks make them skips, as after any lost ack.
"""

import logging

from . import amqp

log = logging.getLogger(__name__)


class Open:
    """Delivery tags not yet acked or requeued, by channel; a delivery's channel from its consumer tag."""

    def __init__(self) -> None:
        self._channels: dict[str, object] = {}   # consumer tag -> the channel it consumes on
        self._tags: dict[object, set[int]] = {}  # channel -> its open delivery tags
        self._single: dict[object, int] = {}     # channel -> deliveries acked one by one on it
        self._done: dict[object, set[int]] = {}  # old channel -> open tags done, their ack waiting
        self._current = None                     # the channel consuming now

    def consuming(self, consumer_tag: str, channel) -> None:
        """``consumer_tag``'s deliveries come on ``channel`` (a pika BlockingChannel)."""
        self._channels[consumer_tag] = channel
        self._tags.setdefault(channel, set())
        self._current = channel

    def channels(self) -> list:
        """Every channel still tracked: the current one and those with deliveries open."""
        return list(self._tags)

    def add(self, method) -> None:
        """A delivery (pika's Basic.Deliver ``method``) is open until acked or requeued."""
        self._tags[self._channels[method.consumer_tag]].add(method.delivery_tag)

    def count(self, channel) -> int:
        """Deliveries open on ``channel``: received, not yet acked or requeued."""
        return len(self._tags.get(channel, ()))

    def channel(self, method):
        """The channel ``method``'s delivery came on (the one to ack or nack it on)."""
        return self._channels[method.consumer_tag]

    def settled(self, method) -> None:
        """``method``'s delivery was acked or requeued by the caller: no longer open."""
        channel = self.channel(method)
        self._tags[channel].discard(method.delivery_tag)
        if channel in self._done:
            self._ack_done(channel)   # a held one gone from below the waiting acks

    def ack(self, methods) -> None:
        """Ack these deliveries: per channel one ack "multiple" when it covers only them, else one by
        one on the consuming channel; on an old one, they wait until one "multiple" covers them
        (see the module's docstring)."""
        by_channel: dict[object, list[int]] = {}
        for method in methods:
            by_channel.setdefault(self.channel(method), []).append(method.delivery_tag)
        for channel, acks in by_channel.items():
            top, acked, open_ = max(acks), set(acks), self._tags[channel]
            if channel is not self._current:   # open until acked: waiting, counted, not drained
                self._done.setdefault(channel, set()).update(acked)
                self._ack_done(channel)
                continue
            if len(acks) > 1 and all(tag in acked for tag in open_ if tag <= top):
                channel.basic_ack(top, multiple=True)
            else:
                amqp.ack_each(channel, acks)
                self._single[channel] = self._single.get(channel, 0) + len(acks)
            open_ -= acked

    def _ack_done(self, channel) -> None:
        """Ack with one "multiple" the done deliveries of an old ``channel`` that no open one
        (held) lies below."""
        done, open_ = self._done[channel], self._tags[channel]
        lowest = min((tag for tag in open_ if tag not in done), default=None)
        ackable = done if lowest is None else {tag for tag in done if tag < lowest}
        if ackable:
            channel.basic_ack(max(ackable), multiple=True)
            open_ -= ackable
            done -= ackable
        if not done:
            del self._done[channel]

    def flush(self) -> None:
        """Ack one by one what still waits on old channels (the consumer is stopping: the held ones
        below return to the queue with their channel; these are done)."""
        for channel, done in list(self._done.items()):
            amqp.ack_each(channel, sorted(done))
            self._tags[channel] -= done
            del self._done[channel]

    def acked_one_by_one(self, channel) -> int:
        """How many deliveries were acked one by one on ``channel`` (an open lower tag ruled out an
        ack "multiple"): what a held delivery's wait has cost so far, in ack frames."""
        return self._single.get(channel, 0)

    def drained(self, current) -> list:
        """Forget and return the channels other than ``current`` with nothing open (to be closed)."""
        done = [channel for channel, tags in self._tags.items() if channel is not current and not tags]
        for channel in done:
            del self._tags[channel]
            self._single.pop(channel, None)
        self._channels = {tag: channel for tag, channel in self._channels.items() if channel in self._tags}
        return done
