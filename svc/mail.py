"""An external effect: a mail handed to an outbox over HTTP (``OUTBOX_URL``), for ``notify``.

Unlike the effect record, a mail cannot join the done mark's etcd transaction: it is sent after
the claim and before the done mark. A process killed in between (``CRASH_AT=sent``) leaves a
mail sent and an event not marked done; after the claim's lease the redelivery sends it again.
The cure the field uses: hand the event id on as an idempotency key (``OUTBOX_IDEMPOTENCY=true``)
so the outbox sends each key once (the ``Idempotency-Key`` header of
https://datatracker.ietf.org/doc/draft-ietf-httpapi-idempotency-key-header/).
"""

import json
import urllib.error
import urllib.request

from .errors import SvcError
from .event import Event

TIMEOUT = 2.0   # seconds per request to the outbox


class MailUnavailable(SvcError):
    """The outbox did not take a mail; the event is requeued (its claim is ours to retry)."""


class Mailer:
    """Hands one mail per event to the outbox at ``url``; with ``idempotency`` each carries
    ``Idempotency-Key: <service>:<event id>``."""

    def __init__(self, url: str, service: str, *, idempotency: bool = False) -> None:
        self.url, self.service, self.idempotency = url.rstrip("/"), service, idempotency

    def send(self, events: list[Event]) -> None:
        """Raise MailUnavailable at the first mail the outbox does not accept."""
        for event in events:
            body = json.dumps({"to": "customer@example.org", "subject": f"{event.type} {event.id}",
                               "event": event.id, "service": self.service}).encode()
            headers = {"Content-Type": "application/json"}
            if self.idempotency:
                headers["Idempotency-Key"] = f"{self.service}:{event.id}"
            request = urllib.request.Request(f"{self.url}/messages", body, headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=TIMEOUT) as reply:
                    reply.read()
            except (urllib.error.URLError, OSError) as error:
                raise MailUnavailable(f"the outbox at {self.url} did not take the mail for {event.id!r}: "
                                      f"{error}") from None
