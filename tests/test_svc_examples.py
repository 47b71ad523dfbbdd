"""The talk's bare-bones example: the producer's message reaches the consumer, which acks it."""

import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pika

from nirvana.testing import wait_for

EXAMPLES = Path(__file__).resolve().parent.parent / "svc" / "examples"


def test_producer_to_consumer(amqp_url, tmp_path):
    body = f'{{"type":"new_order","id":"{uuid.uuid4().hex}"}}'
    produced = subprocess.run([sys.executable, str(EXAMPLES / "producer.py"), body],
                              capture_output=True, text=True, timeout=30)
    assert produced.returncode == 0, produced.stderr
    log = tmp_path / "consumer.log"
    with open(log, "w") as out:
        consumer = subprocess.Popen([sys.executable, str(EXAMPLES / "consumer.py")], stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: f"got {body}" in log.read_text(), "the consumer to print the message")
        consumer.send_signal(signal.SIGINT)
        assert consumer.wait(10) == 0
    finally:
        if consumer.poll() is None:
            consumer.kill()
            consumer.wait(10)
        connection = pika.BlockingConnection(pika.URLParameters(amqp_url))   # nothing left on the broker
        connection.channel().queue_delete("example1")
        connection.close()
    assert "stopped" in log.read_text()
