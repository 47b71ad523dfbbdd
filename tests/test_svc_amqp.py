"""svc.amqp: pika's errors as actions and as svc's errors (pure logic: a table), and the tolerant
decoding of message properties."""

import struct

import pika
import pika.exceptions as exc
import pytest
from pika.adapters.utils.connection_workflow import AMQPConnectorException

from svc import amqp
from svc.amqp import Action, classify, translate
from svc.errors import BrokerRefused, BrokerUnavailable, ChannelClosed, MessageRefused

INEQUIVALENT = ("PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 't-1.orders' in vhost '/': "
                "received none but current is the value 'quorum' of type 'longstr'")
EXCHANGE_TYPE = ("PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'x' in vhost '/': "
                 "received 'topic' but current is 'direct'")

# (pika exception, may_declare, action)
TABLE = [
    (exc.ChannelClosedByBroker(406, INEQUIVALENT), True, Action.STOP),
    (exc.ChannelClosedByBroker(406, EXCHANGE_TYPE), True, Action.STOP),
    (exc.ChannelClosedByBroker(406, "PRECONDITION_FAILED - unknown delivery tag 7"), True, Action.REOPEN_CHANNEL),
    (exc.ChannelClosedByBroker(406, "PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed out"),
     True, Action.REOPEN_CHANNEL),
    (exc.ChannelClosedByBroker(403, "ACCESS_REFUSED - access to queue 'q' in vhost '/' refused"), True, Action.STOP),
    (exc.ChannelClosedByBroker(404, "NOT_FOUND - no exchange 'x' in vhost '/'"), False, Action.STOP),
    (exc.ChannelClosedByBroker(404, "NOT_FOUND - no queue 'q' in vhost '/'"), True, Action.REOPEN_CHANNEL),
    (exc.ChannelClosedByBroker(405, "RESOURCE_LOCKED - cannot obtain exclusive access"), True, Action.REOPEN_CHANNEL),
    (exc.ChannelClosedByClient(200, "Normal shutdown"), True, Action.REOPEN_CHANNEL),
    (exc.ChannelWrongStateError("Channel is closed."), True, Action.REOPEN_CHANNEL),
    (exc.ConsumerCancelled(), True, Action.REOPEN_CHANNEL),
    (exc.NackError([]), True, Action.MESSAGE),
    (exc.UnroutableError([]), True, Action.MESSAGE),
    (exc.ConnectionClosedByBroker(320, "CONNECTION_FORCED - closed via management plugin"), True, Action.RECONNECT),
    (exc.ConnectionClosedByBroker(530, "NOT_ALLOWED - vhost v not found"), True, Action.STOP),
    (exc.ConnectionClosedByBroker(541, "INTERNAL_ERROR"), True, Action.RECONNECT),
    (exc.ConnectionClosedByBroker(505, "UNEXPECTED_FRAME"), True, Action.RECONNECT),
    (exc.ProbableAuthenticationError("ConnectionClosedByBroker: (403) 'ACCESS_REFUSED - Login was refused'"),
     True, Action.STOP),
    (exc.ProbableAccessDeniedError("ConnectionClosedByBroker: (530) 'NOT_ALLOWED - vhost v not found'"),
     True, Action.STOP),
    (exc.AuthenticationError("PLAIN"), True, Action.STOP),
    (amqp.ServerProtocolError("the server answered with a protocol header of its own"), True, Action.STOP),
    (exc.ProtocolVersionMismatch("AMQP 0-9-1", "AMQP 0-8"), True, Action.STOP),
    # pika's guesses for a connection lost at each step of the handshake (pika/connection.py
    # _on_stream_terminated): a loss is no answer (issue 21: a chaos run's cut, a restarting broker)
    (exc.IncompatibleProtocolError("StreamLostError: (\"Stream connection lost: ConnectionResetError(104, "
                                   "'Connection reset by peer')\",)"), True, Action.RECONNECT),
    (exc.IncompatibleProtocolError("StreamLostError: ('Transport indicated EOF',)"), True, Action.RECONNECT),
    (exc.ProbableAuthenticationError("StreamLostError: ('Transport indicated EOF',)"), True, Action.RECONNECT),
    (exc.ProbableAccessDeniedError("StreamLostError: ('Transport indicated EOF',)"), True, Action.RECONNECT),
    (exc.ProbableAuthenticationError("ConnectionClosedByBroker: (320) \"CONNECTION_FORCED - broker forced "
                                     "connection closure with reason 'shutdown'\""), True, Action.RECONNECT),
    # RabbitMQ's 530 answers that waiting cures (rabbit_reader)
    (exc.ProbableAccessDeniedError("ConnectionClosedByBroker: (530) \"NOT_ALLOWED - access to vhost '/' refused "
                                   "for user 'guest': vhost '/' is down\""), True, Action.RECONNECT),
    (exc.ConnectionClosedByBroker(530, "NOT_ALLOWED - access to vhost '/' refused for user 'guest': connection "
                                       "limit (10) is reached"), True, Action.RECONNECT),
    (exc.ConnectionClosedByBroker(530, "NOT_ALLOWED - connection refused for user 'guest': user connection "
                                       "limit (5) is reached"), True, Action.RECONNECT),
    (exc.ProbableAccessDeniedError("ConnectionClosedByBroker: (530) \"NOT_ALLOWED - access to vhost 'v' refused "
                                   "for user 'u'\""), True, Action.STOP),
    (exc.StreamLostError("Stream connection lost: ConnectionResetError(104)"), True, Action.RECONNECT),
    (exc.AMQPHeartbeatTimeout("No activity or too many missed heartbeats in the last 4 seconds"), True,
     Action.RECONNECT),
    (exc.ConnectionBlockedTimeout("Blocked connection timeout expired."), True, Action.RECONNECT),
    (exc.ConnectionWrongStateError("Connection is closed."), True, Action.RECONNECT),
    (exc.ConnectionClosedByClient(200, "Normal shutdown"), True, Action.RECONNECT),
    (exc.AMQPConnectionError("connect failed"), True, Action.RECONNECT),
    (AMQPConnectorException("handshake timed out"), True, Action.RECONNECT),
    (ConnectionRefusedError(111, "Connection refused"), True, Action.RECONNECT),
]

SVC_ERROR = {Action.STOP: BrokerRefused, Action.REOPEN_CHANNEL: ChannelClosed,
             Action.RECONNECT: BrokerUnavailable, Action.MESSAGE: MessageRefused}


@pytest.mark.parametrize("error, may_declare, action", TABLE, ids=[repr(row[0])[:70] for row in TABLE])
def test_each_pika_error_has_its_action_and_svc_error(error, may_declare, action):
    assert classify(error, may_declare=may_declare) is action
    translated = translate(error, "declaring the topology", may_declare=may_declare, url="amqp://u:s3cret@h/%2F")
    assert isinstance(translated, SVC_ERROR[action])   # MessageUnroutable is a MessageRefused
    assert "\n" not in str(translated) and "s3cret" not in str(translated)
    # "is RabbitMQ running?" only when the broker may really be away.
    assert ("is RabbitMQ running?" in str(translated)) == (action is Action.RECONNECT)


def test_an_inequivalent_queue_names_the_queue_the_argument_and_what_to_do():
    error = translate(exc.ChannelClosedByBroker(406, INEQUIVALENT), "declaring the topology")
    text = str(error)
    assert "queue 't-1.orders'" in text and "x-queue-type" in text and "'quorum'" in text
    assert "rabbitmqctl delete_queue t-1.orders" in text and error.code == 406


def _encoded_properties(table_entry: bytes) -> bytes:
    """BasicProperties with only headers set, holding one raw field-table entry (AMQP 0-9-1 4.2.5)."""
    table = struct.pack(">I", len(table_entry)) + table_entry
    return struct.pack(">H", 0x2000) + table  # flag bit 13: headers present


@pytest.mark.parametrize("entry, words", [
    (b"\x02ts" + b"T" + struct.pack(">Q", 1700000000000), "year"),         # milliseconds in a timestamp
    (b"\x02ts" + b"T" + struct.pack(">Q", 2**64 - 10**7), "ValueError|OverflowError"),  # Java's negative time
    (b"\x01k" + b"Z", "InvalidFieldTypeException"),                       # a field type pika does not know
])
def test_properties_pika_cannot_decode_leave_a_marked_empty_properties(entry, words):
    amqp.install_patches()   # what the entry points and every connection of the edge do
    properties = pika.spec.BasicProperties()
    encoded = _encoded_properties(entry)
    properties.decode(encoded)
    reason = amqp.undecodable(properties)
    assert reason.startswith("message properties cannot be decoded") and any(w in reason for w in words.split("|"))
    assert properties.headers is None and amqp.raw_properties(properties) == encoded


def test_decodable_properties_are_untouched():
    amqp.install_patches()
    properties = pika.spec.BasicProperties()
    properties.decode(_encoded_properties(b"\x01kS" + struct.pack(">I", 2) + b"ok"))
    assert properties.headers == {"k": "ok"} and amqp.undecodable(properties) == ""
