"""svc's broker edge: the one place that deals with pika's errors and connection settings (as
``etcd.py`` is for etcd). svc and the kit use pika through it; no other module catches pika's errors.

- ``connect(url, timeout=...)``: a BlockingConnection whose every wait is bounded (socket, the
  whole TCP+TLS+AMQP handshake, a connection blocked by a broker resource alarm), with one attempt
  per node; ``url`` may name several nodes of one cluster, comma-separated: the first that
  answers is used (``connect_first`` says which). ``parameters`` gives the same bounds to a
  connection made otherwise (a SelectConnection).
- ``classify(error)``: what a pika/AMQP error means for the caller, as an ``Action``:
  STOP (a refusal no retry can cure: one line, exit status 2), REOPEN_CHANNEL (the broker closed a
  channel, the connection stands), RECONNECT (the connection is gone: reconnect with backoff),
  MESSAGE (the broker refused one published message: only that message is affected).
- ``translate(error, doing)``: the same error as svc's own (svc/errors.py), one line naming what
  was refused and what to do, so callers never catch ``pika.exceptions.*``; ``translated(doing)``
  a block whose errors leave so; ``passive_declare``, ``missing``, ``closed_by_broker`` and
  ``close_quietly`` for the questions callers asked of pika's errors themselves.

Reply codes are AMQP 0-9-1's (spec section 1.9, "Constants"; https://www.rabbitmq.com/amqp-0-9-1-reference):
channel errors 403 ACCESS_REFUSED, 404 NOT_FOUND, 405 RESOURCE_LOCKED, 406 PRECONDITION_FAILED;
connection errors 320 CONNECTION_FORCED, 530 NOT_ALLOWED, 5xx protocol faults.

``install_patches()`` (called by ``parameters``, so before any connection of svc or the kit opens,
and by the entry points: ``python -m svc``, ``python -m nirvana``, the chapters' ``nirvana.reset``)
makes pika's decoding of message properties tolerant (svc/_pika.py): a delivery whose headers pika
cannot decode arrives with ``undecodable(properties)`` set, instead of tearing the connection down
on every redelivery; and makes a server's protocol header answer an error of its own, so that
answer is told from a connection lost during the header. Importing this module changes nothing
in pika.
"""

import contextlib
import enum
import logging
import re
import time

import pika
import pika.adapters.blocking_connection
import pika.exceptions

from .config import mask_url, split_urls
from ._pika import (BROKER_ERRORS, NOT_FOUND, ServerProtocolError, _describe, closed_by_broker, install_patches,
                    raw_properties, refuse, undecodable)
from .errors import (BrokerRefused, BrokerUnavailable, ChannelClosed, MessageRefused, MessageUnroutable, PublishRefused,
                     SvcError)

__all__ = ["Action", "ServerProtocolError", "classify", "translate", "translated", "closed_by_broker", "missing",
           "passive_declare", "close_quietly", "refused_publish", "connect", "connect_first", "lost", "ack_each", "parameters", "install_patches", "undecodable", "refuse",
           "raw_properties", "own_user_id", "USER_ID_HEADER", "START_HINT", "DEFAULT_TIMEOUT", "BROKER_ERRORS", "NOT_FOUND"]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0  # seconds for the TCP connect, the AMQP handshake, and a blocked connection
START_HINT = "is RabbitMQ running? `./kit up` starts the stack"

ACCESS_REFUSED, RESOURCE_LOCKED, PRECONDITION_FAILED = 403, 405, 406
NOT_ALLOWED = 530


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
    BrokerUnavailable (naming the command that starts the stack), MESSAGE -> MessageRefused
    (MessageUnroutable when no queue was bound to take a mandatory message).
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
        if isinstance(error, pika.exceptions.UnroutableError):
            return MessageUnroutable(f"RabbitMQ returned a message while {doing}: no queue is bound to take it")
        return MessageRefused(f"RabbitMQ refused a message while {doing}: {_describe(error)}")
    return BrokerUnavailable(f"RabbitMQ{where} unavailable for {doing}: {_describe(error)} ({START_HINT})")


@contextlib.contextmanager
def translated(doing: str, *, may_declare: bool = True, url: str | None = None):
    """A block whose broker errors (BROKER_ERRORS) leave as svc's own (``translate``): callers
    outside this module catch svc.errors only, e.g. ``ChannelClosed`` whose ``code`` is
    ``NOT_FOUND`` (404) for a passive declare of a queue that does not exist."""
    try:
        yield
    except BROKER_ERRORS as error:
        raise translate(error, doing, may_declare=may_declare, url=url) from None


def missing(error: SvcError) -> bool:
    """Whether ``error`` (svc's, from ``translate``) is the broker saying that what was asked for
    does not exist (404 NOT_FOUND: a queue or exchange; the broker closed that channel)."""
    return isinstance(error, (ChannelClosed, BrokerRefused)) and error.code == NOT_FOUND


def passive_declare(channel, queue: str):
    """``queue``'s counts from a passive declare (``.message_count``, ``.consumer_count``: nothing
    is created or changed), or None when no such queue exists (the broker then closed ``channel``:
    take a new one). Raises svc's error (``translate``) for anything else."""
    try:
        return channel.queue_declare(queue, passive=True).method
    except BROKER_ERRORS as error:
        translated = translate(error, f"reading the counts of {queue}")
        if missing(translated):
            return None
        raise translated from None


def close_quietly(closable) -> None:
    """Close a channel or connection if it is open; a broker that already dropped it is no error
    (nothing is left to release: what it held unacked goes back to its queue)."""
    if closable is not None and closable.is_open:
        try:
            closable.close()
        except BROKER_ERRORS:
            pass


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
    by ``rabbitmqctl list_connections client_properties`` and the management UI. Installs svc's
    patches to pika first (``install_patches``): every connection of svc and the kit has them."""
    install_patches()
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


def pump_until(connection: pika.BlockingConnection, done, timeout: float, *, step: float = 0.05) -> bool:
    """Turn ``connection``'s I/O loop (its deliveries call their callbacks) until ``done()`` is true
    or ``timeout`` seconds have passed, at most ``step`` seconds a turn; returns ``done()``. The one
    wait on a BlockingConnection outside a consumer's own loop. Raises what pika raises
    (BROKER_ERRORS: the caller translates)."""
    deadline = time.monotonic() + timeout
    while not done():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        connection.process_data_events(time_limit=min(step, left))
    return True


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
