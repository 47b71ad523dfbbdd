"""Exercise 1a: a third service, billing, that sees every event: start it first, then publish.

Its queue exists from its start on (the service declares it, bound with #), so the event is copied
into three queues; and any routing key does, since # matches zero or more words.
"""
from nirvana import graphite, rabbit, services, widgets
from nirvana.publisher import Publisher

for name in ("orders", "notify", "billing"):
    services.start(name)            # a service that already runs is left as it is
since = graphite.mark()
with Publisher(services=("orders", "notify", "billing")) as publisher:
    result = publisher.publish({"type": "new_order", "id": widgets.fresh_id()}, routing_key="eu.orders.large")
print(f"{result.confirmed} confirmed, {result.unroutable} unroutable")
billing_first = graphite.wait_until({f"{name}_new_order_ok": 1 for name in ("orders", "notify", "billing")}, since)

services.stop("billing")            # clean up: billing's queue would keep a copy of every later event
rabbit.delete_queue("billing")
