"""The errors of svc: a shallow hierarchy, library errors translated at the edge."""


class SvcError(Exception):
    """Base class of every error raised by svc."""


class ConfigError(SvcError):
    """A setting is missing or invalid; the message is one line naming the variable."""


class InvalidEvent(SvcError):
    """A message body is not a valid event; ``reason`` says why (it goes into the dead letter)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DedupUnavailable(SvcError):
    """etcd did not answer: nothing may be processed until it does (fail closed)."""


class BrokerUnavailable(SvcError):
    """RabbitMQ did not answer or closed the connection."""


class PublishError(SvcError):
    """Events could not be published (broker refused them or did not confirm in time)."""
