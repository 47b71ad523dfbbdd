"""Exercise 4a: five events of a type nobody knows, then five good ones: predict, then check.

Each service dead-letters each unknown event with its reason and goes on to the next, so the good
events behind them are processed: 10 new dead letters (5 events x 2 services), 5 orders each.
"""
from nirvana import graphite, rabbit, services, widgets
from nirvana.publisher import Publisher

services.restart("orders", dedup=True)
services.restart("notify", dedup=True)
letters_before = rabbit.dead_letters()
since = graphite.mark()
with Publisher() as publisher:
    for _ in range(5):
        publisher.publish({"type": "refund", "id": widgets.fresh_id()})
    for _ in range(5):
        publisher.publish({"type": "new_order", "id": widgets.fresh_id()})
counted = graphite.wait_until({"orders_event_invalid": 5, "notify_event_invalid": 5,
                               "orders_new_order_ok": 5, "notify_new_order_ok": 5}, since)
new_letters = rabbit.wait_for_dead_letters(letters_before + 10) - letters_before
# notify may also count events an earlier exercise left in its queue while it was stopped: at least 5
print(f"new dead letters: {new_letters}; invalid: orders {counted['orders_event_invalid']}, "
      f"notify {counted['notify_event_invalid']}; both processed the 5 good events: "
      f"{min(counted['orders_new_order_ok'], counted['notify_new_order_ok']) >= 5}")
