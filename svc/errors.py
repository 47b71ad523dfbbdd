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


class EtcdRefused(SvcError):
    """etcd answered and refused us, and no retry can cure it: authentication required or failed
    (ETCD_USER, ETCD_PASSWORD), permission denied, a TLS handshake that fails (ETCD_CACERT,
    ETCD_CERT, ETCD_KEY). Stop with one line, exit 2; never read as "etcd is away"."""


class BrokerUnavailable(SvcError):
    """RabbitMQ did not answer or closed the connection."""


class PublishError(SvcError):
    """Events could not be published (broker refused them or did not confirm in time)."""


class BrokerRefused(SvcError):
    """RabbitMQ refused what svc asked for and no retry can cure it (arguments that differ from an
    existing queue's, a missing permission, a wrong login or vhost): stop with one line, exit 2.
    ``code`` and ``text`` are the broker's reply (AMQP reply code, e.g. 406, and its text)."""

    def __init__(self, message: str, *, code: int = 0, text: str = "") -> None:
        super().__init__(message)
        self.code, self.text = code, text


class ChannelClosed(SvcError):
    """RabbitMQ closed a channel (``code``, ``text``); the connection stands: open a new channel."""

    def __init__(self, message: str, *, code: int = 0, text: str = "") -> None:
        super().__init__(message)
        self.code, self.text = code, text


class MessageRefused(PublishError):
    """RabbitMQ refused one published message (a nack, or returned as unroutable); only that
    message is affected, the channel and connection stand."""


class MessageUnroutable(MessageRefused):
    """RabbitMQ returned a message published as mandatory: no queue is bound to take it."""


class PublishRefused(PublishError, BrokerRefused):
    """RabbitMQ refused a publish, or would (a rule checked before sending): the message names the
    reason (a body over the broker's max_message_size, a routing key over 255 bytes, an exchange
    under the reserved ``amq.`` prefix, a missing exchange or write permission). No retry cures
    it: exit status 2 in ``svc.publish``. A PublishError and a BrokerRefused both."""
