"""Exercise 10a: two late readers of one log build one view.

A fresh log of 300 orders (one of them sent twice, as a publisher's retry leaves it); then two
services that did not exist when the orders were published start with SOURCE=log and
LOG_OFFSET=first. Each keeps its own tracking record and its own version of the view; both read
the same events in the same order, so their digests are equal, and each applies the copy once
(the done mark of its id is in its own view). Their names are new on each run: a reader with a
tracking record resumes after it, and the log was emptied under it.
"""
import json

from nirvana import Publisher, publish_bodies, replay, services, widgets

bodies = [json.dumps({"type": "new_order", "id": f"x-{i}", "args": {"sku": f"sku-{i % 3}", "customer": f"c-{i % 4}",
                                                                    "qty": 1}}).encode() for i in range(300)]
replay.reset_log()
with Publisher():   # the topology, the log with it
    publish_bodies(bodies + [bodies[7]])
run = widgets.fresh_id()
readers = [f"audit-{run}", f"billing-{run}"]
for name in readers:
    services.start(name, dedup=True, wait=False, env={"SOURCE": "log", "LOG_OFFSET": "first"})
for name in readers:
    replay.wait_caught_up(name)
    services.stop(name)
digests = {name: replay.digest(name) for name in readers}
twice = sum(replay.applied_twice(name) for name in readers)
same_view = len(set(digests.values())) == 1 and digests[readers[0]] == replay.digest_of(bodies)
print(f"{readers[0]} and {readers[1]}: digests equal and equal to the 300 orders' view: {same_view}; "
      f"events applied twice: {twice}")
