"""The one place that deals with pika's errors and connection settings (as ``etcd.py`` is for etcd).

Three things live here:

- ``connect(url, timeout=...)``: a BlockingConnection whose every wait is bounded (socket, the
  whole TCP+TLS+AMQP handshake, a connection blocked by a broker resource alarm), with one attempt
  per node; ``url`` may name several nodes of one cluster, comma-separated: the first that
  answers is used (``connect_first`` says which).
- ``classify(error)``: what a pika/AMQP error means for the caller, as an ``Action``:
  STOP (a refusal no retry can cure: one line, exit status 2), REOPEN_CHANNEL (the broker closed a
  channel, the connection stands), RECONNECT (the connection is gone: reconnect with backoff),
  MESSAGE (the broker refused one published message: only that message is affected).
- ``translate(error, doing)``: the same error as svc's own (svc/errors.py), one line naming what
  was refused and what to do, so callers never catch ``pika.exceptions.*``.

Reply codes are AMQP 0-9-1's (spec section 1.9, "Constants"; https://www.rabbitmq.com/amqp-0-9-1-reference):
channel errors 403 ACCESS_REFUSED, 404 NOT_FOUND, 405 RESOURCE_LOCKED, 406 PRECONDITION_FAILED;
connection errors 320 CONNECTION_FORCED, 530 NOT_ALLOWED, 5xx protocol faults.

Importing this module also makes pika's decoding of message properties tolerant (see
``_install_tolerant_properties``): a delivery whose headers pika cannot decode arrives with
``undecodable(properties)`` set, instead of tearing the connection down on every redelivery; and
makes a server's protocol header answer an error of its own (``_install_protocol_answer``), so
that answer is told from a connection lost during the header.
"""

import enum
import logging
import re

import pika
import pika.adapters.blocking_connection
import pika.connection
import pika.exceptions
import pika.frame
import pika.spec
from pika.adapters.utils.connection_workflow import AMQPConnectorException

from .config import mask_url, split_urls
from .errors import BrokerRefused, BrokerUnavailable, ChannelClosed, MessageRefused, PublishRefused, SvcError

__all__ = ["Action", "ServerProtocolError", "classify", "translate", "refused_publish", "connect", "connect_first", "lost", "ack_each", "parameters",
           "undecodable", "refuse", "raw_properties", "own_user_id", "USER_ID_HEADER", "START_HINT", "DEFAULT_TIMEOUT", "BROKER_ERRORS"]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0  # seconds for the TCP connect, the AMQP handshake, and a blocked connection
START_HINT = "is RabbitMQ running? `./kit up` starts the stack"

# Everything pika raises at us: its own errors, a handshake that timed out (AMQPConnectorException is
# not an AMQPError) and the socket's OSError.
BROKER_ERRORS = (pika.exceptions.AMQPError, AMQPConnectorException, OSError)

ACCESS_REFUSED, NOT_FOUND, RESOURCE_LOCKED, PRECONDITION_FAILED = 403, 404, 405, 406
NOT_ALLOWED = 530


class ServerProtocolError(pika.exceptions.IncompatibleProtocolError):
    """The server answered svc's AMQP 0-9-1 protocol header with its own, another protocol's (AMQP
    0-9-1 section 4.2.2: a server that does not speak the client's version answers so and closes):
    it is not a RabbitMQ that svc can talk to. Raised through pika (see ``_install_protocol_answer``)."""


class Action(enum.Enum):
    """What the caller does about a broker error."""

    STOP = "stop"                      # refusal no retry can cure: one line, exit status 2
    REOPEN_CHANNEL = "reopen channel"  # the connection stands: a new channel, topology again
    RECONNECT = "reconnect"            # the connection is gone: reconnect with backoff
    MESSAGE = "message"                # one published message refused: handle only that one


def classify(error: BaseException, *, may_declare: bool = True) -> Action:
    """The Action for ``error`` (any exception pika raised).

    Only an answer the broker gave stops: a login refused (403 ACCESS_REFUSED during the
    handshake), a vhost not found or not allowed (530 NOT_ALLOWED), a permission refused, no common
    authentication mechanism, a server that answered with another protocol's header. A connection
    lost at any step of the handshake is RECONNECT, however pika names it: pika calls a stream
    lost during the protocol header an IncompatibleProtocolError, during Connection.Start a
    ProbableAuthenticationError, during Tune/Open a ProbableAccessDeniedError (guesses from the
    step alone, pika/connection.py ``_on_stream_terminated``; pika/pika#830, #516), with the real
    cause in the text: a ConnectionClosedByBroker with its reply code is an answer, a
    StreamLostError (EOF, reset) is not. A refusal that waiting cures (a vhost being restarted,
    a connection limit reached: RabbitMQ's 530 texts "is down", "limit ... is reached") is RECONNECT.

    ``may_declare``: whether the caller declares what it uses; if not, 404 NOT_FOUND (an exchange
    or queue that does not exist) is a refusal (STOP), else declaring again cures it (REOPEN_CHANNEL).
    A 406 PRECONDITION_FAILED is configuration (STOP) when it says "inequivalent arg" (an exchange
    or queue exists with other arguments, RabbitMQ docs "Queues: Property Equivalence"); any other
    406 (an unknown delivery tag, a delivery acknowledgement timeout, a message over the broker's
    max_message_size) closes only the channel.
    """
    exc = pika.exceptions
    if isinstance(error, (exc.NackError, exc.UnroutableError)):
        return Action.MESSAGE
    if isinstance(error, (ServerProtocolError, exc.AuthenticationError, exc.ProtocolVersionMismatch)):
        return Action.STOP   # the server's own answer: another protocol, no common login mechanism
    if isinstance(error, (exc.IncompatibleProtocolError, exc.ProbableAuthenticationError,
                          exc.ProbableAccessDeniedError)):
        code, text = _reply(error)
        answered = "ConnectionClosedByBroker" in str(error) and code
        return Action.STOP if answered and _refusal(code, text) else Action.RECONNECT
    if isinstance(error, exc.ConnectionClosedByBroker):
        return Action.STOP if _refusal(error.reply_code, error.reply_text) else Action.RECONNECT
    if isinstance(error, exc.ChannelClosedByBroker):
        code = error.reply_code
        if code == ACCESS_REFUSED or (code == PRECONDITION_FAILED and "inequivalent arg" in error.reply_text):
            return Action.STOP
        if code == NOT_FOUND and not may_declare:
            return Action.STOP
        return Action.REOPEN_CHANNEL
    if isinstance(error, (exc.ChannelClosed, exc.ChannelWrongStateError, exc.ConsumerCancelled)):
        return Action.REOPEN_CHANNEL
    # Every other AMQPError (stream lost, heartbeat timeout, blocked too long, connection closed or
    # in the wrong state, protocol faults), a handshake timeout, a socket error.
    return Action.RECONNECT


# RabbitMQ's 530 NOT_ALLOWED answers that waiting cures (rabbit_reader: "access to vhost '~s'
# refused for user '~s': vhost '~s' is down", "...: connection limit (~p) is reached",
# "connection refused for user '~s': user connection limit (~p) is reached").
_TRANSIENT_REFUSAL_RE = re.compile(r"is down|limit \(\d+\) is reached")


def _refusal(code: int, text: str) -> bool:
    """Whether the broker's connection close (``code``, ``text``) refuses what no retry cures."""
    return code in (ACCESS_REFUSED, NOT_ALLOWED) and not _TRANSIENT_REFUSAL_RE.search(text)


def translate(error: BaseException, doing: str, *, may_declare: bool = True, url: str | None = None) -> SvcError:
    """svc's error for ``error``, one line: ``doing`` says what was attempted ("declaring the topology").

    STOP -> BrokerRefused (with what to do), REOPEN_CHANNEL -> ChannelClosed, RECONNECT ->
    BrokerUnavailable (naming the command that starts the stack), MESSAGE -> MessageRefused.
    ``url`` (masked) is named in connection errors.
    """
    action = classify(error, may_declare=may_declare)
    where = f" at {mask_url(url)}" if url else ""
    code, text = _reply(error)
    if action is Action.STOP:
        return BrokerRefused(f"RabbitMQ{where} refused {doing}: {_advice(error, code, text)}", code=code, text=text)
    if action is Action.REOPEN_CHANNEL:
        return ChannelClosed(f"RabbitMQ closed the channel while {doing}: ({code}) {text}", code=code, text=text)
    if action is Action.MESSAGE:
        return MessageRefused(f"RabbitMQ refused a message while {doing}: {_describe(error)}")
    return BrokerUnavailable(f"RabbitMQ{where} unavailable for {doing}: {_describe(error)} ({START_HINT})")


def refused_publish(error: BaseException, exchange: str, url: str | None = None) -> PublishRefused | None:
    """svc's PublishRefused when ``error`` is the broker closing a publishing channel over what was
    published (403 ACCESS_REFUSED: no write permission; 404 NOT_FOUND: no such exchange; 406
    PRECONDITION_FAILED: a body over max_message_size, a user_id not the connection's), else None.
    A channel that publishes declares nothing, so each of these is about the publish itself."""
    if not isinstance(error, pika.exceptions.ChannelClosedByBroker) or \
            error.reply_code not in (ACCESS_REFUSED, NOT_FOUND, PRECONDITION_FAILED):
        return None
    where = f" at {mask_url(url)}" if url else ""
    return PublishRefused(f"RabbitMQ{where} refused publishing to exchange {exchange!r}: "
                          f"{_advice(error, error.reply_code, error.reply_text)}",
                          code=error.reply_code, text=error.reply_text)


def parameters(url: str, timeout: float = DEFAULT_TIMEOUT, *, name: str | None = None,
               blocked_timeout: float | None = None) -> pika.URLParameters:
    """pika parameters for ``url`` with every wait bounded by ``timeout`` (seconds) unless the URL
    sets a shorter one: socket_timeout, stack_timeout (TCP + AMQP handshake),
    blocked_connection_timeout (a connection the broker blocks for a resource alarm is closed with
    ConnectionBlockedTimeout instead of waiting forever; ``blocked_timeout`` if given, else ``timeout``).
    One connection attempt; ``name`` is shown
    by ``rabbitmqctl list_connections client_properties`` and the management UI."""
    params = pika.URLParameters(url)
    params.connection_attempts = 1
    params.socket_timeout = min(params.socket_timeout or timeout, timeout)
    params.stack_timeout = min(params.stack_timeout or timeout, timeout)
    blocked = blocked_timeout or timeout
    params.blocked_connection_timeout = min(params.blocked_connection_timeout or blocked, blocked)
    if name:
        params.client_properties = {"connection_name": name}
    return params


def ack_each(channel: pika.adapters.blocking_connection.BlockingChannel, delivery_tags: list[int]) -> None:
    """Ack each of ``delivery_tags`` (not empty) on its own, all sent together. pika's
    ``BlockingChannel.basic_ack`` turns the I/O loop once per call (a write and a poll per ack):
    while a held delivery's low tag rules out an ack "multiple", that was most of a consumer's time
    (py-spy, bench_svc.py's dead sibling). All but the last are queued on the channel underneath;
    the last call sends them. Raises what ``basic_ack`` raises (BROKER_ERRORS)."""
    *first, last = delivery_tags
    for delivery_tag in first:
        channel._impl.basic_ack(delivery_tag=delivery_tag, multiple=False)  # queued; sent by the flush below
    channel.basic_ack(last)


def connect(url: str, timeout: float = DEFAULT_TIMEOUT, *, name: str | None = None,
            blocked_timeout: float | None = None) -> pika.BlockingConnection:
    """An open BlockingConnection to the first of ``url``'s nodes that answers (one URL, or several
    separated by commas: see ``connect_first``), or svc's error. Raises within about ``timeout``
    seconds per node."""
    return connect_first(split_urls(url), timeout, name=name, blocked_timeout=blocked_timeout)[0]


def connect_first(urls, timeout: float = DEFAULT_TIMEOUT, *, name: str | None = None,
                  blocked_timeout: float | None = None) -> tuple[pika.BlockingConnection, str]:
    """(an open BlockingConnection, its URL): the nodes of one cluster tried in the order of
    ``urls`` (a sequence of AMQP URLs), one attempt each (see ``parameters`` for the bounds).

    Raises svc's error: BrokerRefused at the first node that refuses the login, vhost or
    permissions (the nodes of a cluster share them: the next one would refuse too; exit status 2
    material), else BrokerUnavailable when no node answers in time (naming each node's error).
    """
    # pika's BlockingConnection([params, ...]) tries several nodes too, but folds every failure into
    # one AMQPConnectionWorkflowFailed: a refused login could not be told from a node away, nor
    # the node that answered named.
    failures = []
    for url in urls:
        try:
            connection = pika.BlockingConnection(parameters(url, timeout, name=name, blocked_timeout=blocked_timeout))
            if len(urls) > 1:
                log.info("connected to %s", mask_url(url))
            return connection, url
        except BROKER_ERRORS as error:
            translated = translate(error, "the connection", url=url)
            if not isinstance(translated, BrokerUnavailable):
                raise translated from None
            failures.append(translated)
    if len(failures) == 1:
        raise failures[0]
    raise BrokerUnavailable(f"no RabbitMQ node of {len(failures)} answered: "
                            + "; ".join(str(f).removesuffix(f" ({START_HINT})") for f in failures)
                            + f" ({START_HINT})")


def lost(urls: tuple[str, ...], url: str | None) -> tuple[str, ...]:
    """The order to try ``urls`` in after the connection to ``url`` (one of them, or None) was
    lost: that node last, the nodes after it first (the order of ``urls`` kept otherwise)."""
    if url not in urls:
        return urls
    i = urls.index(url)
    return urls[i + 1:] + urls[:i + 1]


# -- one line per refusal ----------------------------------------------------------------------

_INEQUIVALENT_RE = re.compile(r"inequivalent arg '(?P<arg>[^']+)' for (?P<kind>exchange|queue) '(?P<name>[^']+)'"
                              r" in vhost '[^']*': received (?P<ours>.+?) but current is (?P<theirs>.+)$")


def _reply(error: BaseException) -> tuple[int, str]:
    """(reply code, reply text) of a broker close, also when pika wrapped it in a connect error."""
    if isinstance(error, (pika.exceptions.ChannelClosed, pika.exceptions.ConnectionClosed)):
        return error.reply_code, error.reply_text
    # ProbableAuthenticationError and kin: the close's repr, its text quoted as Python's repr quotes it
    match = re.search(r"""\((\d{3})\) (?:'([^']*)'|"([^"]*)")""", str(error))
    return (int(match[1]), match[2] if match[2] is not None else match[3]) if match else (0, _describe(error))


def _advice(error: BaseException, code: int, text: str) -> str:
    match = _INEQUIVALENT_RE.search(text)
    if match:
        kind, name, arg = match["kind"], match["name"], match["arg"]
        return (f"{kind} '{name}' already exists with {arg} {match['theirs']}, and svc declares it with "
                f"{match['ours']} (406 PRECONDITION_FAILED, inequivalent arg '{arg}'); delete that {kind} "
                f"(after moving its messages: rabbitmqctl delete_{kind} {name}) or use another name "
                "(EVENTS_EXCHANGE / SERVICE_NAME, or --exchange)")
    if isinstance(error, ServerProtocolError):
        return f"{error.args[0]}; check the host and port in the AMQP URL"
    if isinstance(error, (pika.exceptions.ProbableAuthenticationError, pika.exceptions.AuthenticationError)):
        return f"the login ({code} {text}); check the user and password in the AMQP URL"
    if isinstance(error, pika.exceptions.ProbableAccessDeniedError) or code == NOT_ALLOWED:
        return f"the virtual host ({code} {text}); check the vhost in the AMQP URL (rabbitmqctl list_vhosts)"
    if code == PRECONDITION_FAILED and "larger than" in text and "max size" in text:
        return (f"{text} (406): the event is over the broker's max_message_size; publish smaller events, "
                "or raise max_message_size on the broker")
    if code == ACCESS_REFUSED and "reserved prefix" in text:
        return f"{text} (403); names starting with amq. are the broker's own: use another name"
    if code == ACCESS_REFUSED:
        return f"{text} (403); grant the user that permission (rabbitmqctl set_permissions) or use another name"
    if code == NOT_FOUND:
        return f"{text} (404); create it first or fix the name"
    return f"({code}) {text}" if code else _describe(error)


def _describe(error: BaseException) -> str:
    text = str(error) or repr(error.args)  # pika's connect errors keep the cause in args, str() is ""
    return f"{type(error).__name__}: {text}".replace("\n", " ")[:300]


# -- a message svc publishes again (a dead letter, a copy at a queue's tail) ---------------------

USER_ID_HEADER = "x-nirvana-user-id"   # an event's user_id that svc's own user may not publish


def own_user_id(properties, headers: dict, user: str | None) -> str | None:
    """The ``user_id`` svc may publish a message of ``properties`` again with: the message's own when
    it is ``user`` (svc's, from AMQP_URL) or unset, else None, the message's moved into ``headers``
    (USER_ID_HEADER): RabbitMQ refuses a publish whose user_id is not the connection's user (406
    PRECONDITION_FAILED "user_id property set to ... but authenticated user was ...", closing
    the channel), RabbitMQ docs "Validated User-ID"."""
    user_id = properties.user_id
    if user_id is None or user_id == user:
        return user_id
    headers[USER_ID_HEADER] = user_id
    return None


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
        if isinstance(frame_value, pika.frame.ProtocolHeader) and not self.is_open:
            # (pika's ProtocolHeader turns a 0 in the version into 0-9-1's digit: the version is not named)
            self._terminate_stream(ServerProtocolError(
                "the server answered svc's AMQP 0-9-1 protocol header with a protocol header of its own: "
                "it does not speak AMQP 0-9-1"))
            return None
        return original(self, frame_value)

    _process_frame._svc_protocol_answer = True
    connection._process_frame = _process_frame


_install_tolerant_properties()
_install_protocol_answer()
