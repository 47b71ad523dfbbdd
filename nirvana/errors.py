"""The kit's errors, under one root. Each message is one line saying what is wrong and what to do.

svc's own errors (:mod:`svc.errors`: BrokerUnavailable, DedupUnavailable, PublishError, ...) reach
a notebook unchanged where it calls svc (a publish, an effects count); the kit raises these.
"""

from svc.errors import BrokerUnavailable, DedupUnavailable


class KitError(Exception):
    """Base class of every error the kit raises."""


class SettingError(KitError):
    """A setting (environment variable) has a value the kit refuses; exit status 2."""


class StackError(KitError):
    """A component of the stack cannot be started or reached."""


class ServiceError(KitError):
    """A service did not start or could not be found."""


class RabbitUnavailable(KitError, ConnectionError):
    """RabbitMQ did not answer in time, refused, or dropped the connection."""


class NoSuchQueue(KitError, LookupError):
    """The queue does not exist: events published now are kept for nobody under that name."""

    def __init__(self, queue: str) -> None:
        self.queue = queue
        super().__init__(
            f"no such queue {queue}: RabbitMQ keeps nothing for it, so events published now are lost "
            "to it; start its service first, or publish with Publisher(services=[...]) naming it"
        )


class GraphiteError(KitError):
    """graphite-web answered a query with an error (an HTTP error status, or not JSON)."""


class GraphiteUnavailable(GraphiteError, ConnectionError):
    """graphite-web did not answer the render API at all."""


class WaitTimeout(KitError, TimeoutError):
    """A wait reached its deadline; the message names what it waited for and what it saw."""


class MeasureError(KitError):
    """A measurement could not be taken as it should (events the broker did not take, confirm or
    route): its numbers would be wrong, so none are given."""


# A read of etcd or RabbitMQ that failed for now (no etcd leader for a moment, a node restarting or
# cut): a wait that reads through faults takes it as "not yet" (nirvana._wait.poll's ``transient``)
TRANSIENT_READ_ERRORS = (DedupUnavailable, BrokerUnavailable, RabbitUnavailable)

__all__ = ["KitError", "SettingError", "StackError", "ServiceError", "RabbitUnavailable", "NoSuchQueue", "GraphiteError",
           "GraphiteUnavailable",
           "WaitTimeout", "MeasureError", "TRANSIENT_READ_ERRORS"]

