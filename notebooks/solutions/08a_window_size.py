"""Exercise 8a: the same 1,000 events through orders with dedup on, with windows of 3 and of 500.

svc claims a window of events in one etcd transaction and marks it done in another, so its etcd
round trips are per window, not per event. PREFETCH sets how many events RabbitMQ hands out before
an ack (a window is a third of it): PREFETCH=9 pays the two round trips for every 3 events,
PREFETCH=1500 (the default) for up to 500. The rate is counted from the first to the last effect
record's time, so the service's start is not in it.
"""
import time

from nirvana import effects, services, widgets
from nirvana.publisher import Publisher

EVENTS = 1000
window_rates = {}   # PREFETCH -> events/s
for prefetch in (9, 1500):
    services.stop("orders")
    batch = f"8a-{prefetch}-{widgets.fresh_id()}"
    with Publisher() as publisher:   # orders is stopped: the events wait in its queue
        publisher.publish({"type": "new_order", "id": batch}, count=EVENTS, fresh_ids=True)
    services.start("orders", dedup=True, env={"PREFETCH": str(prefetch)})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        times = sorted(r["at"] for r in effects.records(None, "orders") if r["id"].startswith(batch))
        if len(times) == EVENTS:
            break
        time.sleep(0.5)
    else:
        raise TimeoutError(f"PREFETCH={prefetch}: {len(times)} of {EVENTS} events processed in 60 s")
    window_rates[prefetch] = (len(times) - 1) / (times[-1] - times[0])
services.restart("orders", dedup=True)   # back to the default PREFETCH
for prefetch, rate in window_rates.items():
    print(f"PREFETCH={prefetch}: {rate:,.0f} events/s")
