"""Exercise 5a: orders killed right after its claim (CRASH_AT=claimed), its claim on a 6 s lease.

Predict, then check: how long does the redelivered event wait once orders is back? The dead claim
lives on its lease: the restarted orders holds the event aside (unacked) until the lease ends, then
claims it and processes it once. The lease was taken when orders started and refreshed every third
of CLAIM_TTL until the kill, so it ends between 2/3 of CLAIM_TTL and all of it after the kill.
A shorter CLAIM_TTL recovers faster; one shorter than the work lets a slow but live service lose its
claim to a sibling.
"""
import time

from svc import Etcd, keys

from nirvana import effects, rabbit, services, widgets
from nirvana.publisher import Publisher
from nirvana.settings import current

CLAIM_TTL = 6   # seconds
event_id = widgets.fresh_id()
services.restart("orders", dedup=True, env={"CRASH_AT": "claimed", "CLAIM_TTL": str(CLAIM_TTL)})
published_at = time.monotonic()
with Publisher() as publisher:
    publisher.publish({"type": "new_order", "id": event_id}, routing_key="foo")
rabbit.wait_for_depth("orders", 1)    # claimed, then killed: the unacked event is back in the queue
killed_at = time.monotonic()
settings = current()
etcd = Etcd(list(settings.etcd_endpoints), access=settings.etcd_access)
claim = etcd.get(keys.dedup_key(settings.etcd_prefix, "orders", event_id))   # b"claimed <digest> <lease, hex>"
dead_lease = int(claim.split()[2], 16)
services.restart("orders", dedup=True, env={"CLAIM_TTL": str(CLAIM_TTL)})   # without CRASH_AT
deadline = time.monotonic() + CLAIM_TTL + 15
while effects.count(etcd, "orders", event_id) == 0 and time.monotonic() < deadline:
    time.sleep(0.2)
recorded = effects.count(etcd, "orders", event_id)
# etcd still listing the dead claim's lease once the effect shows would mean it was processed too soon
after_the_lease = recorded > 0 and dead_lease not in etcd.leases()
etcd.close()
print(f"processed {recorded} time(s), {time.monotonic() - published_at:.1f} s after the publish, "
      f"{time.monotonic() - killed_at:.1f} s after the kill (the claim's lease: {CLAIM_TTL} s, "
      f"refreshed every {CLAIM_TTL / 3:g} s while orders lived)")
