"""Exercise 1b: make the publisher report an unroutable event.

An exchange with no queue bound to it routes nowhere. The publisher sets the mandatory flag, so
RabbitMQ returns the event instead of dropping it in silence, and the publisher counts it.
"""
import pika

from nirvana.publisher import Publisher
from nirvana.settings import current
from svc import topology

EXCHANGE = "exercise-nowhere"

with Publisher(exchange=EXCHANGE, services=()) as publisher:   # services=(): declare no queue
    result = publisher.publish({"type": "new_order", "id": "nowhere-1"}, routing_key="foo")
print(f"{result.confirmed} confirmed, {result.unroutable} unroutable")

# clean up what the publisher declared: the exchange and its dead-letter exchange and queue
connection = pika.BlockingConnection(pika.URLParameters(current().amqp_url))
topology.delete(connection.channel(), EXCHANGE)
connection.close()
