"""Python's cyclic garbage collector, tuned while a loop handles events (the consumer, the replay).

Each event allocates a few hundred short-lived containers (pika frames, parsed JSON, protobuf
wrappers, tuples): with Python's thresholds (700, 10, 10) the youngest generation is collected
every few events and a full pass, which walks every module's objects too, every few hundred.
Measured in ``python -m svc`` with etcd deduplication draining 40,000 events (issue 24, the
collector's own CPU time through ``gc.callbacks``, load 2-3): 409-421 collections, 0.11-0.13 s of
its 2.5-2.7 s of CPU (about 3 µs per event); tuned, 36 collections, 0.005-0.007 s. The objects
made before the loop (modules, settings, clients) are frozen out of every pass (``gc.freeze``);
garbage is still collected, cycles a little later.
"""

import contextlib
import gc

GC_THRESHOLD = (10_000, 10, 10)   # the collector's thresholds while the loop runs (Python's: 700, 10, 10)


@contextlib.contextmanager
def tuned():
    """Within the block the objects made so far are frozen and the collector runs every
    GC_THRESHOLD[0] net allocations instead of 700; then its thresholds are restored and the
    frozen objects collectable again. Process-wide, as the collector is: nested or concurrent
    blocks (two consumers in one test process) leave it tuned until the last one ends."""
    global _depth
    thresholds = gc.get_threshold()
    if _depth == 0:
        _saved[:] = thresholds
    _depth += 1
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0:
            gc.set_threshold(*_saved)
            gc.unfreeze()


_depth = 0          # blocks running now
_saved: list = []   # the thresholds before the first of them
