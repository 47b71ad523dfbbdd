"""Requeue on a quorum queue without spending its delivery limit: a confirmed copy at the tail.

A quorum queue counts every return of a message against its ``x-delivery-limit`` (RabbitMQ 3.10+:
a nack with requeue as much as a channel or connection closed while the message was unacked) and
dead-letters it past the limit. svc requeues good events for reasons that are no fault of theirs
(etcd away, a sibling's claim, a claim lost); nacked back, such an event would be dead-lettered
after DELIVERY_LIMIT tries. So on a quorum queue svc publishes a copy of it to the queue's tail
through the default exchange (that queue alone, not every service bound to the events exchange),
waits for the broker's confirm, and only then acks the original: the limit is left to what it is
for, a consumer that dies on the event.

The copy starts with a delivery count of 0, so it carries the returns of the copies before it
(``RETURNED_HEADER``): an event that crashed its consumers before it was requeued keeps those
crashes, and svc dead-letters it itself once they add up past the limit (``over_limit``).
"""

import copy
import logging

from . import amqp
from .amqp import BROKER_ERRORS, Action

log = logging.getLogger(__name__)

RETURNED_HEADER = "x-nirvana-returned"   # returns of this event's earlier copies
DELIVERY_COUNT_HEADER = "x-delivery-count"  # set by a quorum queue: returns of this copy so far


def returned(properties) -> int:
    """How many times this event went back to its queue unsettled (its consumer died or lost its
    connection while holding it), over all its copies."""
    headers = properties.headers or {}
    return sum(value for value in (headers.get(RETURNED_HEADER), headers.get(DELIVERY_COUNT_HEADER))
               if isinstance(value, int))


def over_limit(properties, delivery_limit: int) -> str:
    """The dead letter's reason if the event was returned more than ``delivery_limit`` times over
    its copies (as the broker counts a single copy), else ""."""
    count = returned(properties)
    if count <= delivery_limit:
        return ""
    return (f"returned to its queue {count} times unsettled (its consumer died or lost its connection "
            f"while holding it), over the delivery limit {delivery_limit}")


def copy_properties(properties, user: str | None = None):
    """The delivery's properties for its copy: the same, with the returns so far in RETURNED_HEADER,
    and a ``user_id`` other than ``user`` (svc's own) in a header (the broker would refuse the copy
    with it: ``amqp.own_user_id``)."""
    headers = dict(properties.headers or {})
    count = returned(properties)
    headers.pop(DELIVERY_COUNT_HEADER, None)
    if count:
        headers[RETURNED_HEADER] = count
    user_id = amqp.own_user_id(properties, headers, user)
    properties = copy.copy(properties)
    properties.headers, properties.delivery_mode, properties.user_id = headers, 2, user_id
    return properties


def at_tail(channel, queue: str, method, properties, body: bytes, *, user: str | None = None) -> bool:
    """Publish a copy of a delivery to the tail of ``queue`` on ``channel`` (a BlockingChannel in
    confirm mode) and wait for the broker's confirm; True if confirmed (the caller acks the
    original then), False if the broker refused this one message (nacked: a full queue; returned:
    no such queue), when the caller nacks the original back instead. Other broker errors (the
    channel or connection gone) are raised for the caller's broker edge: the original, unacked,
    returns to the queue. ``user``: svc's own (AMQP_URL's), see ``copy_properties``."""
    try:
        channel.basic_publish("", queue, body, copy_properties(properties, user), mandatory=True)
    except BROKER_ERRORS as error:
        if amqp.classify(error) is not Action.MESSAGE:
            raise
        log.warning("the copy of delivery %d for the tail of %s was refused (%s); requeued with a nack instead",
                    method.delivery_tag, queue, amqp.translate(error, "requeueing at the tail"))
        return False
    return True
