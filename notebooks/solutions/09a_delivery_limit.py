"""Exercise 9a: a poison event on a quorum queue, on the single node: the delivery limit.

A quorum queue counts how often each message went back to it. ``ledger`` (a service of this
exercise, on an exchange of its own so the chapters' classic queues stay as they are) runs with
QUEUE_TYPE=quorum and DELIVERY_LIMIT=2 and dies on every delivery (CRASH_AT=claimed: killed after
its claim, before the work). Started again after each crash, it gets the event 3 times (the first
delivery and 2 returns); then it is dead-lettered instead of handed out again: by RabbitMQ
(x-death's reason ``delivery_limit``), or by svc itself when it reads the delivery count over the
limit first. Without a limit the event would crash the service forever.
"""
import time

from nirvana import rabbit, services, widgets
from nirvana.publisher import Publisher

EXCHANGE, LIMIT = "quorum-demo", 2
settings = {"EVENTS_EXCHANGE": EXCHANGE, "QUEUE_TYPE": "quorum", "DELIVERY_LIMIT": str(LIMIT), "CLAIM_TTL": "1",
            "CRASH_AT": "claimed"}


services.start("ledger", dedup=True, env=settings)   # declares its quorum queue and dead letters
rabbit.purge_queues([rabbit.dead_letter_queue(EXCHANGE)])   # a letter left by an earlier try
with Publisher(exchange=EXCHANGE, services=("ledger",), queue_type="quorum", delivery_limit=LIMIT) as publisher:
    publisher.publish({"type": "new_order", "id": widgets.fresh_id()})
crashes = 0
deadline = time.monotonic() + 60
while not rabbit.dead_letters(exchange=EXCHANGE):
    if not services.instances("ledger"):   # it died on the event: start it again on the returned copy
        crashes += 1
        services.start("ledger", dedup=True, env=settings, wait=False, progress=lambda line: None)
    if time.monotonic() > deadline:
        raise TimeoutError(f"9a: no dead letter after {crashes} crashes in 60 s")
    time.sleep(0.2)
if not services.instances("ledger"):   # the last crash, seen after its event was dead-lettered
    crashes += 1
services.stop("ledger")
letters = rabbit.peek_dead_letters(exchange=EXCHANGE)
rabbit.delete_queue("ledger", exchange=EXCHANGE)   # so it collects nothing more
rabbit.delete_queue("dead-letters", exchange=EXCHANGE)   # its dead letters too
rabbit.delete_queue("log", exchange=EXCHANGE)   # and the log every declarer keeps: nothing of 9a stays on the broker
print(f"ledger crashed {crashes} times; then the dead letters held: {letters}")
over_the_limit = len(letters) == 1 and "delivery limit" in letters[0]
