"""Reliability Nirvana presentation kit: the stack, the services, the panels and plots."""


def reset() -> None:
    """Return the whole demo to a clean start in one call.

    Stops every ``svc`` process the kit started, then purges the kit's queues and deletes its
    etcd keys and whisper files (see :func:`nirvana.stack.reset`).
    """
    from . import services, stack

    services.stop_all()
    stack.reset()
