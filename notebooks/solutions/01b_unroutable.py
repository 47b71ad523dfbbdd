"""Exercise 1b: make the publisher report an unroutable event.

An exchange with no queue bound to it routes nowhere. The publisher sets the mandatory flag, so
RabbitMQ returns the event instead of dropping it in silence, and the publisher counts it.
"""
import pika

from nirvana import endpoints
from svc import topology
from svc.publish import Publisher

EXCHANGE = "exercise-nowhere"

with Publisher(endpoints.AMQP_URL, EXCHANGE, services=()) as publisher:   # services=(): declare no queue
    result = publisher.publish({"type": "new_order", "id": "nowhere-1"}, routing_key="foo")
print(f"{result.confirmed} confirmed, {result.unroutable} unroutable")

# clean up what the publisher declared: the exchange and its dead-letter exchange and queue
connection = pika.BlockingConnection(pika.URLParameters(endpoints.AMQP_URL))
topology.delete(connection.channel(), EXCHANGE)
connection.close()
