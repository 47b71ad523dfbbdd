"""``python -m svc.publish``: publish events, as the talk did with plumber.

    python -m svc.publish --exchange events --routing-key foo --input '{"type":"new_order","id":"123"}'
    python -m svc.publish --input '{"type":"new_order","id":"123"}' --count 5        # 5 duplicates
    python -m svc.publish --input '{"type":"new_order","id":"o"}' --count 10000 --fresh-ids

Input that is not JSON is refused with exit status 2 and nothing is published; JSON that is not an
object is published exactly as given (the consumers dead-letter it). What the broker refuses and no
retry can cure (an exchange of another type, or missing with --no-declare; a wrong login, vhost or
permission; a publish refused by name: an event over the broker's max_message_size, a routing key
over 255 bytes, an exchange under the reserved amq. prefix, the last two checked before
connecting) is one line and exit status 2 too. Exit status 1 means not every event was confirmed and
routed, or RabbitMQ could not be reached (the reason is printed).
"""

import argparse
import json
import os
import sys

from . import install_patches, topology
from .config import DEFAULT_AMQP_URL, EXCHANGE_RE, MAX_DELIVERY_LIMIT
from .amqp import START_HINT
from .errors import BrokerRefused, BrokerUnavailable, PublishError
from .publisher import DEFAULT_ROUTING_KEY, Publisher, PublishResult

__all__ = ["Publisher", "PublishResult", "main"]


def main(argv=None) -> int:
    """``python -m svc.publish``: publish an event (``--count`` copies) with confirms; the exit status."""
    install_patches()
    parser = argparse.ArgumentParser(prog="python -m svc.publish", description="Publish events to RabbitMQ.")
    parser.add_argument("--amqp-url", default=DEFAULT_AMQP_URL)
    parser.add_argument("--exchange", default=topology.DEFAULT_EXCHANGE)
    parser.add_argument("--routing-key", default=DEFAULT_ROUTING_KEY)
    parser.add_argument("--input", required=True, help="the event as JSON, e.g. '{\"type\":\"new_order\",\"id\":\"123\"}'")
    parser.add_argument("--count", type=int, default=1, help="publish the event N times (duplicates)")
    parser.add_argument("--fresh-ids", action="store_true", help="give each copy its own id")
    parser.add_argument("--service", action="append", dest="services",
                        help="declare this service's queue first (repeatable; default: orders, notify)")
    parser.add_argument("--no-declare", action="store_true",
                        help="declare nothing: publish to an exchange that must already exist")
    parser.add_argument("--queue-type", choices=topology.QUEUE_TYPES, default=os.environ.get("QUEUE_TYPE", "classic"),
                        help="the type the services declare their queues with (default: $QUEUE_TYPE or classic)")
    parser.add_argument("--delivery-limit", type=int, default=os.environ.get("DELIVERY_LIMIT", topology.DEFAULT_DELIVERY_LIMIT),
                        help="the services' delivery limit for quorum queues (default: $DELIVERY_LIMIT or 5)")
    args = parser.parse_args(argv)
    try:
        event = json.loads(args.input)
    except json.JSONDecodeError as error:
        parser.exit(2, f"svc.publish: --input is not valid JSON ({error.msg} at char {error.pos}); "
                       "nothing was published\n")
    if args.count < 0:
        parser.exit(2, "svc.publish: --count must be 0 or more; nothing was published\n")
    if args.fresh_ids and not isinstance(event, dict):
        parser.exit(2, "svc.publish: --fresh-ids needs a JSON object as --input; nothing was published\n")
    if args.queue_type not in topology.QUEUE_TYPES or not 1 <= args.delivery_limit <= MAX_DELIVERY_LIMIT:
        parser.exit(2, f"svc.publish: --queue-type {args.queue_type!r} / --delivery-limit {args.delivery_limit} is "
                       f"invalid: use {' or '.join(topology.QUEUE_TYPES)}, and 1 to {MAX_DELIVERY_LIMIT}; nothing was published\n")
    if not EXCHANGE_RE.fullmatch(args.exchange):
        parser.exit(2, f"svc.publish: --exchange {args.exchange!r} is invalid; nothing was published\n")
    services = tuple(args.services) if args.services else topology.DEFAULT_SERVICES
    # JSON that is not an object (3, null, "x", [1]) goes out as typed: the consumers dead-letter
    # it, which is how the kit shows bad input.
    body = event if isinstance(event, dict) else args.input
    try:
        result = Publisher(args.amqp_url, args.exchange, services=services, declare=not args.no_declare,
                           queue_type=args.queue_type, delivery_limit=args.delivery_limit).publish(
            body, args.routing_key, count=args.count, fresh_ids=args.fresh_ids)
    except BrokerRefused as error:
        print(f"svc.publish: {error}; nothing was published", file=sys.stderr)
        return 2
    except BrokerUnavailable as error:
        hint = "" if START_HINT in str(error) else f" ({START_HINT})"
        print(f"svc.publish: {error}{hint}", file=sys.stderr)
        return 1
    except PublishError as error:
        print(f"svc.publish: {error}", file=sys.stderr)
        return 1
    print(f"published {result.confirmed} of {args.count} to {args.exchange!r} with routing key "
          f"{args.routing_key!r}: {result.confirmed} confirmed, {result.unroutable} unroutable, {result.nacked} nacked")
    if result.unroutable:
        print(f"svc.publish: {result.unroutable} events were unroutable: no queue is bound to "
              f"{args.exchange!r} for {args.routing_key!r}", file=sys.stderr)
    if result.nacked:
        # A nack carries no reason (AMQP 0-9-1); RabbitMQ sends one for a queue at its max-length
        # with overflow reject-publish, or when a queue could not take the message (its process or
        # quorum leader failing): nothing of those events was stored, a later try may succeed.
        print(f"svc.publish: {result.nacked} events were nacked by the broker (a queue full with overflow "
              "reject-publish, or a queue that could not take them): none of them was stored; publish them "
              "again later, or make room in the queue", file=sys.stderr)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
