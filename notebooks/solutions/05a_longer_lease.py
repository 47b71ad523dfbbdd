"""Exercise 5a: orders killed right after its claim (CRASH_AT=claimed), its claim on a 6 s lease.

Predict, then check: how long does the redelivered event wait once orders is back? The dead claim
lives on its lease: the restarted orders holds the event aside (unacked) until the lease ends, then
claims it and processes it once. A shorter CLAIM_TTL recovers faster; one shorter than the work
lets a slow but live service lose its claim to a sibling.
"""
import time

from nirvana import effects, rabbit, services, widgets
from nirvana.publisher import Publisher

CLAIM_TTL = 6   # seconds
event_id = widgets.fresh_id()
services.restart("orders", dedup=True, env={"CRASH_AT": "claimed", "CLAIM_TTL": str(CLAIM_TTL)})
published_at = time.monotonic()
with Publisher() as publisher:
    publisher.publish({"type": "new_order", "id": event_id}, routing_key="foo")
rabbit.wait_for_depth("orders", 1)    # claimed, then killed: the unacked event is back in the queue
services.restart("orders", dedup=True, env={"CLAIM_TTL": str(CLAIM_TTL)})   # without CRASH_AT
deadline = time.monotonic() + CLAIM_TTL + 15
while effects.count(None, "orders", event_id) == 0 and time.monotonic() < deadline:
    time.sleep(0.2)
waited = time.monotonic() - published_at
recorded = effects.count(None, "orders", event_id)
print(f"processed {recorded} time(s), {waited:.1f} s after the publish (the claim's lease: {CLAIM_TTL} s)")
after_the_lease = waited >= CLAIM_TTL   # the claim was made after the publish: its lease ends later
