"""svc.settle and svc.backoff: how a window's outcomes become broker calls, and the one backoff.

Pure logic: the broker channels are stand-ins that record what they are asked (the Consumer's
loop with a real RabbitMQ is tested in test_svc_broker_edges.py, test_svc_service.py and others).
"""

import ast
from pathlib import Path

import pika
import pika.exceptions

from svc import metrics
from svc.backoff import LIMIT, START, Backoff
from svc.config import Config
from svc.held import Held
from svc.outcome import ACK, REQUEUE, UNAVAILABLE, Outcome, Settlement
from svc.settle import Settler
from nirvana.testing import MemoryMeter

ROOT = Path(__file__).resolve().parent.parent
CONFIG = Config.from_env({"SERVICE_NAME": "orders"})


class Channel:
    """A broker channel that records acks, nacks and publishes; ``refuse`` nacks publishes."""

    def __init__(self, refuse: bool = False) -> None:
        self.calls, self.refuse, self.is_open, self._impl = [], refuse, True, self

    def basic_ack(self, delivery_tag, multiple=False):
        self.calls.append(("ack", delivery_tag, multiple))

    def basic_nack(self, delivery_tag, requeue=True):
        self.calls.append(("nack", delivery_tag, requeue))

    def basic_publish(self, exchange, routing_key, body, properties, mandatory=False):
        if self.refuse:
            raise pika.exceptions.NackError([])
        self.calls.append(("publish", exchange, body, properties.headers["x-nirvana-reason"]))


def delivery(tag: int, body: bytes = b"{}"):
    return (pika.spec.Basic.Deliver("ctag", tag, False, "events", "foo"), pika.BasicProperties(), body)


def settler(dead: Channel, slept: list) -> tuple[Settler, Channel, MemoryMeter]:
    meter, consuming = MemoryMeter(), Channel()
    made = Settler(CONFIG, meter, slept.append)
    made.begin(Held(retry_after=10.5), user="guest")
    made.dead = dead
    made.open.consuming("ctag", consuming)
    return made, consuming, meter


def test_the_backoff_doubles_from_start_to_the_limit_and_starts_again():
    backoff = Backoff()
    assert [backoff.next() for _ in range(7)] == [START, 0.4, 0.8, 1.6, 3.2, LIMIT, LIMIT]
    backoff.reset()
    assert backoff.next() == START
    backoff.slowest()
    assert backoff.next() == LIMIT


def test_a_window_is_acked_dead_lettered_then_acked_and_requeued():
    slept, dead = [], Channel()
    made, consuming, _ = settler(dead, slept)
    batch = [delivery(1), delivery(2, b"junk"), delivery(3)]
    for method, _properties, _body in batch:
        made.open.add(method)
    made.settle(batch, None, [ACK, Outcome(Settlement.DEAD, "invalid: not JSON"), REQUEUE])
    # The dead letter is published (confirmed) before the original is acked; 1 and 2 in one ack
    # "multiple" (3 is still open when they are acked); 3 back to the queue at once.
    assert dead.calls == [("publish", "events.dlx", b"junk", "invalid: not JSON")]
    assert consuming.calls == [("ack", 2, True), ("nack", 3, True)]
    assert slept == [0.0]


def test_requeues_while_etcd_is_away_wait_longer_each_time_and_reset_after():
    slept = []
    made, _consuming, _ = settler(Channel(), slept)
    for tag in (1, 2, 3):
        made.open.add(delivery(tag)[0])
    made.requeue([(delivery(1), UNAVAILABLE)])
    made.requeue([(delivery(2), UNAVAILABLE)])
    made.requeue([(delivery(3), REQUEUE)])
    assert slept == [START, 2 * START, 0.0]


def test_a_refused_dead_letter_is_kept_unacked_counted_and_published_again_when_due():
    slept, dead = [], Channel(refuse=True)
    made, consuming, meter = settler(dead, slept)
    made.open.add(delivery(1)[0])
    made.settle([delivery(1, b"junk")], None, [Outcome(Settlement.DEAD, "invalid")])
    assert consuming.calls == [] and len(made.kept) == 1 and made.next_due() is not None
    assert meter.counts == {metrics.dead_letter_refused("orders"): 1}
    # When the broker takes it again and it is due, it is published, then acked
    dead.refuse, made.kept[0].due = False, 0.0
    made.retry_kept()
    assert dead.calls == [("publish", "events.dlx", b"junk", "invalid")]
    assert consuming.calls == [("ack", 1, False)] and made.kept == [] and made.next_due() is None


def test_a_new_channel_starts_with_nothing_open_held_or_kept():
    made, _consuming, _ = settler(Channel(refuse=True), [])
    made.open.add(delivery(1)[0])
    made.settle([delivery(1)], None, [Outcome(Settlement.DEAD, "invalid")])
    held = Held(retry_after=1.0)
    made.begin(held, user="guest")
    assert made.kept == [] and made.open.channels() == [] and made.held is held and made.dead is None


def test_the_consumer_and_the_settler_create_all_their_state_in_init():
    # found: the consumer's per-channel state (_pending, _kept, _open, held, _cancelled...) was
    # first created in _consume; every attribute is now declared in __init__ (and set again there)
    for path, name in (("svc/consumer.py", "Consumer"), ("svc/settle.py", "Settler")):
        tree = ast.parse((ROOT / path).read_text())
        [cls] = [node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == name]
        assigned: dict[str, set[str]] = {}
        for method in (node for node in cls.body if isinstance(node, ast.FunctionDef)):
            for node in ast.walk(method):
                targets = node.targets if isinstance(node, ast.Assign) else \
                    [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else []
                for target in (t for each in targets for t in ast.walk(each)):
                    if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) \
                            and target.value.id == "self":
                        assigned.setdefault(method.name, set()).add(target.attr)
        late = {attr for method, attrs in assigned.items() if method != "__init__" for attr in attrs}
        assert late - assigned["__init__"] == set(), name
