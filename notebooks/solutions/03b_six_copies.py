"""Exercise 3b: one new event published six times at once, with dedup on: predict, then check.

The first copy is claimed and processed; the other five find it done (in the service's memory, or
through their claim) and are skipped. Whatever the timing, the order is recorded once.
"""
from nirvana import graphite, services, widgets
from nirvana.endpoints import ETCD_ENDPOINT as ETCD
from nirvana import effects
from nirvana.publisher import Publisher

services.start("orders", dedup=True)   # left as it is if it already runs with dedup on
event_id = widgets.fresh_id()
since = graphite.mark()
with Publisher() as publisher:
    publisher.publish({"type": "new_order", "id": event_id}, routing_key="foo", count=6)
six_copies = graphite.wait_until({"orders_new_order_ok": 1, "orders_new_order_skipped": 5}, since)
six_copies["recorded"] = effects.count(ETCD, "orders", event_id)
print(six_copies)
