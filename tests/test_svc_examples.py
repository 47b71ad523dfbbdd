"""The talk's bare-bones example: the producer's message reaches the consumer, which acks it."""

import contextlib
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pika

from nirvana.testing import wait_for

EXAMPLES = Path(__file__).resolve().parent.parent / "svc" / "examples"


@contextlib.contextmanager
def example_consumer(amqp_url, tmp_path):
    """svc/examples/consumer.py running, its output in a file: (process, log path). On the way out
    it is killed if still running, and its queue deleted (nothing left on the broker)."""
    log = tmp_path / "consumer.log"
    with open(log, "w") as out:
        consumer = subprocess.Popen([sys.executable, str(EXAMPLES / "consumer.py")], stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield consumer, log
    finally:
        if consumer.poll() is None:
            consumer.kill()
            consumer.wait(10)
        connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        connection.channel().queue_delete("example1")
        connection.close()


def test_producer_to_consumer(amqp_url, tmp_path):
    body = f'{{"type":"new_order","id":"{uuid.uuid4().hex}"}}'
    produced = subprocess.run([sys.executable, str(EXAMPLES / "producer.py"), body],
                              capture_output=True, text=True, timeout=30)
    assert produced.returncode == 0, produced.stderr
    with example_consumer(amqp_url, tmp_path) as (consumer, log):
        wait_for(lambda: f"got {body}" in log.read_text(), "the consumer to print the message")
        consumer.send_signal(signal.SIGINT)
        assert consumer.wait(10) == 0
    assert "stopped" in log.read_text()


def test_ctrl_c_while_the_consumer_acks_stops_it_cleanly(amqp_url, tmp_path):
    # Given the example consumer acking a stream of 3,000 queued messages...
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    channel.queue_declare("example1", durable=True)
    for i in range(3000):
        channel.basic_publish("", "example1", f'{{"type":"new_order","id":"ctrl-c-{i}"}}'.encode())
    connection.close()
    with example_consumer(amqp_url, tmp_path) as (consumer, log):
        wait_for(lambda: "got " in log.read_text(), "the consumer's first message")
        # ... when Ctrl-C is pressed three times in quick succession while it acks (a KeyboardInterrupt
        # inside pika's send sent an ack twice: "unknown delivery tag", the channel closed by the broker)
        for _ in range(3):
            consumer.send_signal(signal.SIGINT)
            time.sleep(0.02)
        # I expect it to stop cleanly: exit status 0, "stopped", no traceback
        assert consumer.wait(10) == 0, log.read_text()[-2000:]
    text = log.read_text()
    assert "stopped" in text and "Traceback" not in text, text[-2000:]
