"""The lowest layer of svc's broker edge (:mod:`svc.amqp` re-exports all of it; only it and
:mod:`svc.topology`, which svc.amqp's own imports need, import this module): the errors pika
raises, a broker's close told apart, and svc's two patches to pika, installed by an explicit
call (:func:`install_patches`, called before every connection), never at import: tolerant
decoding of message properties and an error of its own for a server's protocol header.
"""

import pika
import pika.connection
import pika.exceptions
import pika.frame
import pika.spec
from pika.adapters.utils.connection_workflow import AMQPConnectorException

# Everything pika raises at us: its own errors, a handshake that timed out (AMQPConnectorException is
# not an AMQPError) and the socket's OSError.
BROKER_ERRORS = (pika.exceptions.AMQPError, AMQPConnectorException, OSError)
NOT_FOUND = 404   # AMQP 0-9-1's reply code: no such queue or exchange


class ServerProtocolError(pika.exceptions.IncompatibleProtocolError):
    """The server answered svc's AMQP 0-9-1 protocol header with its own, another protocol's (AMQP
    0-9-1 section 4.2.2: a server that does not speak the client's version answers so and closes):
    it is not a RabbitMQ that svc can talk to. Raised through pika (see ``_install_protocol_answer``)."""


def _describe(error: BaseException) -> str:
    text = str(error) or repr(error.args)  # pika's connect errors keep the cause in args, str() is ""
    return f"{type(error).__name__}: {text}".replace("\n", " ")[:300]


def closed_by_broker(error: BaseException, *, connection: bool = False) -> tuple[int, str] | None:
    """(reply code, reply text) when ``error`` (one of BROKER_ERRORS) is the broker closing the
    channel with an answer (with ``connection``, the connection too), else None: for code that
    decides by the broker's words and lets every other error go on to its caller untouched."""
    kinds = (pika.exceptions.ChannelClosedByBroker, pika.exceptions.ConnectionClosedByBroker) if connection \
        else pika.exceptions.ChannelClosedByBroker
    return (error.reply_code, error.reply_text) if isinstance(error, kinds) else None


# -- properties pika cannot decode -------------------------------------------------------------

_UNDECODABLE, _RAW = "_svc_undecodable", "_svc_raw_properties"


def undecodable(properties) -> str:
    """Why pika could not decode a delivery's properties ("" if it could): the message is whole
    (body and routing), only its properties (headers, content type...) are unknown."""
    return getattr(properties, _UNDECODABLE, "")


def refuse(properties, reason: str) -> None:
    """Mark a delivery as one not to process: the consumer dead-letters it with ``reason``, as it
    does one whose properties cannot be decoded (``undecodable`` then returns the reason)."""
    setattr(properties, _UNDECODABLE, reason)


def raw_properties(properties) -> bytes:
    """The encoded properties pika could not decode (b"" if it could), to keep them with the dead letter."""
    return getattr(properties, _RAW, b"")


def _install_tolerant_properties() -> None:
    """Make ``BasicProperties.decode`` tolerant of values Python cannot represent.

    pika decodes a content header frame's properties inside its frame reader: an exception there
    (an AMQP timestamp 'T' holding milliseconds -> ``datetime.fromtimestamp`` ValueError "year
    58122 is out of range"; a negative Java timestamp -> OverflowError; an unknown field type)
    becomes StreamLostError and the connection drops. The message is never acked, so it comes back
    on every reconnect and blocks the queue (pika issues #98, #1698; fixed for timestamps only in
    pika's PR #1699, not in a release as of pika 1.4.4). Here any such failure leaves the
    properties empty and marked (``undecodable``), the frame is still consumed whole (its size is
    read before the properties), and the consumer dead-letters the message with the reason.
    """
    properties = pika.spec.BasicProperties
    if getattr(properties.decode, "_svc_tolerant", False):
        return
    original = properties.decode

    def decode(self, encoded, offset=0):
        try:
            return original(self, encoded, offset)
        except Exception as error:  # noqa: BLE001 - anything raised here would drop the connection
            self.__dict__.update(pika.spec.BasicProperties().__dict__)
            setattr(self, _UNDECODABLE, f"message properties cannot be decoded ({_describe(error)})")
            setattr(self, _RAW, bytes(encoded[offset:]))
            return self

    decode._svc_tolerant = True
    properties.decode = decode


def _install_protocol_answer() -> None:
    """Make a server's protocol header answer an error that says so (ServerProtocolError).

    A server that does not speak AMQP 0-9-1 answers the client's protocol header with its own and
    closes (AMQP 0-9-1 section 4.2.2). pika 1.4 decodes that header and drops it
    (``Connection._process_frame``), then reads the close as a stream lost during the header, the
    same IncompatibleProtocolError(StreamLostError EOF) a proxy or a restarting broker gives: an
    answer could not be told from a loss. Here the header ends the connection with
    ServerProtocolError, which ``classify`` reads as a refusal.
    """
    connection = pika.connection.Connection
    if getattr(connection._process_frame, "_svc_protocol_answer", False):
        return
    original = connection._process_frame

    def _process_frame(self, frame_value):
        if self.is_open:
            # The header was answered: pika's own method from now on (three frames per message).
            self._process_frame = original.__get__(self)
        elif isinstance(frame_value, pika.frame.ProtocolHeader):
            # (pika's ProtocolHeader turns a 0 in the version into 0-9-1's digit: the version is not named)
            self._terminate_stream(ServerProtocolError(
                "the server answered svc's AMQP 0-9-1 protocol header with a protocol header of its own: "
                "it does not speak AMQP 0-9-1"))
            return None
        return original(self, frame_value)

    _process_frame._svc_protocol_answer = True
    connection._process_frame = _process_frame


def install_patches() -> None:
    """Install svc's two patches to pika (idempotent): tolerant decoding of message properties
    (``_install_tolerant_properties``) and the protocol header answer (``_install_protocol_answer``).
    Called by the entry points and before every connection (``parameters``), never at import:
    importing svc or the kit leaves pika as it ships."""
    _install_tolerant_properties()
    _install_protocol_answer()
