"""Exercise 2a: kill orders in the middle of its work; the event it held goes back to its queue.

WORK_MS=3000 makes orders spend 3 s between taking the event and recording it, so the kill lands
in the middle. The event was delivered but not acked, so RabbitMQ puts it back (a redelivery) and
the restarted orders processes it.
"""
from nirvana import graphite, rabbit, services, widgets
from nirvana.publisher import Publisher

services.restart("orders", env={"WORK_MS": "3000"})   # 3 s of simulated work per window
since = graphite.mark()
with Publisher() as publisher:
    publisher.publish({"type": "new_order", "id": widgets.fresh_id()}, routing_key="foo")
rabbit.wait_for_depth("orders", 0)     # delivered: orders holds it, unacked, and works
services.kill("orders")                # SIGKILL, in the middle of the 3 s
rabbit.wait_for_depth("orders", 1)     # never acked: back in the queue
depth_after_kill = rabbit.queue_depth("orders")
print("waiting in events.orders after the kill:", depth_after_kill)

services.restart("orders")             # without WORK_MS this time
processed = graphite.wait_for("orders_new_order_ok", 1, since)
print("orders_new_order_ok =", processed)
