"""Exercise 3a: orders crashes after the done mark, before the ack (CRASH_AT=done).

The broker redelivers the event (it was never acked); the done mark turns the redelivery into a
skip. One effect, not two. WORK_MS=1000 keeps the event in orders' hands long enough to see it
leave the queue before the crash.
"""
from nirvana import graphite, rabbit, services, widgets
from nirvana.endpoints import ETCD_ENDPOINT as ETCD
from nirvana import effects
from nirvana.publisher import Publisher

event_id = widgets.fresh_id()
services.restart("orders", dedup=True, env={"CRASH_AT": "done", "WORK_MS": "1000"})
since = graphite.mark()
with Publisher() as publisher:
    publisher.publish({"type": "new_order", "id": event_id}, routing_key="foo")
rabbit.wait_for_depth("orders", 0)     # delivered: claimed, in the work
rabbit.wait_for_depth("orders", 1)     # orders wrote the done mark and the effect, then died before the ack
services.restart("orders", dedup=True)   # without CRASH_AT: the redelivery arrives
skipped = graphite.wait_for("orders_new_order_skipped", 1, since)
recorded = effects.count(ETCD, "orders", event_id)
print(f"orders recorded {event_id}: {recorded} time(s); the redelivery was skipped: {skipped}")
