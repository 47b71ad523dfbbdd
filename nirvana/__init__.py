"""Reliability Nirvana presentation kit: the stack, the services, the panels and plots.

The notebooks call two things from here: :func:`reset` at the top of a chapter and
:func:`teardown` at its end.
"""

from . import services, settings, stack


def reset() -> None:
    """Return the whole demo to a clean start in one call.

    Stops every ``svc`` process the kit started, then purges the kit's queues and deletes its
    etcd keys and whisper files (see :func:`nirvana.stack.reset`).
    """
    settings.current()   # a bad setting (ETCD_PREFIX=/) stops here, before anything is stopped or deleted
    services.stop_all()
    stack.reset()


def teardown() -> None:
    """End a chapter: stop every ``svc`` process the kit started and say how many are left."""
    services.stop_all()
    print(f"svc processes left: {len(services.running_pids())}")
