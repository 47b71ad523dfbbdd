"""The dead letters: list them, re-publish a fixed event to its service, or discard one.

A dead letter is an event a service could never process (not JSON, no id, an unknown type, an id
seen with another payload). ``svc`` publishes it to the dead-letter queue with its reason and the
service in its headers (see :mod:`svc.topology`), then acks the original. Here a human looks at
it and decides:

- :func:`peek` lists the letters and leaves them in the queue (fetched without an ack, handed
  back when the channel closes);
- :func:`republish` sends a fixed body straight to the service's own queue (the default
  exchange routes by queue name, so the sibling that processed it fine does not get it again),
  waits for the broker's confirm, and only then removes the letter;
- :func:`discard` removes one letter for good.

A letter is named by its :attr:`DeadLetter.key`, a digest of service, reason and body, so an
action takes exactly the letter that was shown even if the queue's order changed meanwhile.
:class:`DeadLetterPanel` puts the same three calls behind buttons.
"""

import hashlib
from dataclasses import dataclass
from typing import Any, Callable

import ipywidgets as widgets
import pika

from svc import amqp, topology
from svc.errors import MessageRefused, MessageUnroutable, SvcError

from .errors import KitError
from .rabbit import _connection, _text, dead_letter_queue, queue_of
from .settings import current
from .widgets import _Panel

DEFAULT_LIMIT = 200      # letters read per look: a demo has a handful, a flood is cut here
BODY_SHOWN = 60          # characters of a body shown on one line


class DeadLetterError(KitError):
    """A dead letter could not be found, re-published or removed (the message says which)."""


@dataclass(frozen=True)
class DeadLetter:
    """One letter of the dead-letter queue: which service gave up on it, why, and the body."""

    service: str
    reason: str
    body: bytes
    routing_key: str = ""

    @property
    def key(self) -> str:
        """12 hex digits naming this letter (service, reason and body): what actions look for."""
        digest = hashlib.sha256(b"\0".join([self.service.encode(), self.reason.encode(), self.body]))
        return digest.hexdigest()[:12]

    @property
    def text(self) -> str:
        """The body as text (bytes that are not UTF-8 shown as U+FFFD)."""
        return self.body.decode("utf-8", "replace")

    def __str__(self) -> str:
        body = self.text if len(self.text) <= BODY_SHOWN else self.text[:BODY_SHOWN - 1] + "…"
        return f"{self.service}: {self.reason}: {body}"


def _letter(properties, body: bytes, exchange: str) -> DeadLetter:
    headers = properties.headers or {}
    return DeadLetter(
        # svc's service and reason headers, or, for what the broker dead-lettered (a quorum queue's
        # delivery limit, a TTL), the queue and reason of its x-death
        service=topology.dead_letter_service(headers, exchange),
        reason=topology.dead_letter_reason(headers),
        body=bytes(body),
        routing_key=_text(headers.get(topology.ROUTING_KEY_HEADER, "")),
    )


def _walk(channel, exchange: str | None, limit: int, visit: Callable[[int, DeadLetter], bool]) -> None:
    """basic_get up to ``limit`` letters of ``exchange``'s dead-letter queue (None: the kit's
    EVENTS_EXCHANGE) without ack; ``visit(tag, letter)`` returns True to stop.

    Whatever is not acked goes back to the queue when the caller closes the channel.
    """
    exchange = exchange or current().exchange
    try:
        with amqp.translated("reading the dead letters"):
            for _ in range(limit):
                method, properties, body = channel.basic_get(dead_letter_queue(exchange), auto_ack=False)
                if method is None or visit(method.delivery_tag, _letter(properties, body, exchange)):
                    return
    except SvcError as error:
        if not amqp.missing(error):   # no dead-letter queue yet: no letters
            raise


def peek(limit: int = DEFAULT_LIMIT, *, exchange: str | None = None,
         url: str | None = None) -> list[DeadLetter]:
    """Up to ``limit`` dead letters, sorted by service, reason and body; they stay in the queue.

    ``exchange`` and ``url`` default to the kit's settings (EVENTS_EXCHANGE, AMQP_URL:
    :mod:`nirvana.settings`), as for every helper here. Raises :class:`nirvana.rabbit.RabbitUnavailable` (naming ``./kit up``) when RabbitMQ is down.
    """
    letters: list[DeadLetter] = []
    with _connection(url, "reading the dead letters") as connection:
        channel = connection.channel()
        _walk(channel, exchange, limit, lambda _tag, letter: letters.append(letter))
        amqp.close_quietly(channel)   # unacknowledged letters go back to the queue: looking loses nothing
    return sorted(letters, key=lambda one: (one.service, one.reason, one.body))


def _take(letter: DeadLetter, exchange: str | None, url: str | None, limit: int,
          before_ack: Callable[[Any], None] | None = None) -> None:
    """Find the letter by its key, run ``before_ack(connection)``, then ack (remove) it.

    If ``before_ack`` raises, nothing is acked: the letter stays. Raises DeadLetterError when no
    letter with that key is among the first ``limit``.
    """
    with _connection(url, "taking a dead letter") as connection:
        channel = connection.channel()
        found: list[int] = []
        _walk(channel, exchange, limit,
              lambda tag, seen: seen.key == letter.key and not found.append(tag))
        try:
            if not found:
                raise DeadLetterError(f"no dead letter {letter.key} ({letter}) in "
                                      f"{dead_letter_queue(exchange)}: someone took it already? look again")
            if before_ack is not None:
                before_ack(connection)
            channel.basic_ack(found[0])
        finally:
            amqp.close_quietly(channel)   # every other letter we fetched goes back to the queue


def discard(letter: DeadLetter, *, exchange: str | None = None, url: str | None = None,
            limit: int = DEFAULT_LIMIT) -> DeadLetter:
    """Remove one dead letter for good; returns it. Raises DeadLetterError if it is gone."""
    _take(letter, exchange, url, limit)
    return letter


def republish(letter: DeadLetter, body: bytes | str | None = None, *, exchange: str | None = None,
              url: str | None = None, limit: int = DEFAULT_LIMIT) -> DeadLetter:
    """Send ``body`` (the fixed event; the letter's own body when None) to the letter's service
    queue, then remove the letter; returns the letter as re-published.

    The publish is confirmed by the broker (publisher confirms, mandatory) before the ack that
    removes the letter: a crash between the two leaves the letter in place and the event published,
    a repeat the service's deduplication skips; never neither. Raises DeadLetterError when the
    letter is gone or the service's queue does not exist (the letter then stays).
    """
    if body is None:
        body = letter.body
    payload = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    queue = queue_of(letter.service, exchange)

    def publish(connection) -> None:
        channel = connection.channel()
        channel.confirm_delivery()
        properties = pika.BasicProperties(
            content_type="application/json", delivery_mode=2,
            headers={topology.ROUTING_KEY_HEADER: letter.routing_key} if letter.routing_key else None)
        try:
            with amqp.translated(f"publishing to {queue}"):
                channel.basic_publish("", queue, payload, properties, mandatory=True)
        except MessageUnroutable:
            raise DeadLetterError(f"{queue} does not exist: start {letter.service} once "
                                  "(or `./kit up`) so it is declared; the dead letter stays") from None
        except MessageRefused:
            raise DeadLetterError(f"RabbitMQ refused the event for {queue}; the dead letter stays") from None
        finally:
            amqp.close_quietly(channel)

    _take(letter, exchange, url, limit, before_ack=publish)
    return DeadLetter(letter.service, letter.reason, payload, letter.routing_key)


class DeadLetterPanel(_Panel):
    """The dead letters in a list (service · reason · body), the selected body editable, and
    three buttons: look again, re-publish (the edited body), discard.

    Each button is a method: ``refresh_button.click()`` is ``refresh()``,
    ``republish_button.click()`` is ``republish()``, ``discard_button.click()`` is ``discard()``.
    ``letters`` is what the list shows; ``last_result`` the last letter acted on; errors go to
    ``last_error`` and the output (a click has no cell to raise into). ``exchange`` and ``url``
    default to the kit's settings (:mod:`nirvana.settings`), read at each action.
    """

    def __init__(self, *, exchange: str | None = None, url: str | None = None) -> None:
        super().__init__()
        self.exchange, self.url = exchange, url
        self.letters: list[DeadLetter] = []
        self.last_result: DeadLetter | None = None
        self.choice = widgets.Select(options=[], rows=8, layout=widgets.Layout(width="100%"))
        self.body = widgets.Textarea(placeholder="the selected dead letter's body: fix it here, then re-publish",
                                     layout=widgets.Layout(width="100%", height="4em"))
        self.refresh_button = widgets.Button(description="look again", icon="refresh")
        self.republish_button = widgets.Button(description="re-publish to its service", icon="repeat",
                                               button_style="primary", layout=widgets.Layout(width="auto"))
        self.discard_button = widgets.Button(description="discard", icon="trash", button_style="danger")
        self.choice.observe(lambda change: self._show_body(change["new"]), "value")
        self.refresh_button.on_click(lambda _button: self.refresh())
        self.republish_button.on_click(lambda _button: self.republish())
        self.discard_button.on_click(lambda _button: self.discard())
        self.widget = widgets.VBox([
            self.choice, self.body,
            widgets.HBox([self.refresh_button, self.republish_button, self.discard_button]),
            self.output,
        ])
        self.refresh()

    @property
    def selected(self) -> DeadLetter | None:
        """The letter chosen in the list (the first one after a refresh), or None."""
        index = self.choice.value
        return self.letters[index] if index is not None and index < len(self.letters) else None

    def _show_body(self, index: int | None) -> None:
        self.body.value = self.letters[index].text if index is not None and index < len(self.letters) else ""

    def refresh(self) -> list[DeadLetter] | None:
        """What "look again" does: read the dead letters again (they stay in the queue)."""
        def look() -> list[DeadLetter]:
            self.letters = peek(exchange=self.exchange, url=self.url)
            self.choice.options = [(str(letter), i) for i, letter in enumerate(self.letters)]
            self.choice.value = 0 if self.letters else None
            self._show_body(self.choice.value)
            return self.letters
        return self._attempt(look)

    def select(self, service: str, reason_contains: str = "") -> DeadLetter | None:
        """Choose the first letter of ``service`` whose reason contains ``reason_contains`` (what a
        click in the list does); its body appears in the editor. None (and ``last_error``) if none."""
        self.last_error = None
        for i, letter in enumerate(self.letters):
            if letter.service == service and reason_contains in letter.reason:
                self.choice.value = i
                return letter
        self.last_error = f"no dead letter of {service} with {reason_contains!r} in its reason: look again"
        self.say(self.last_error)
        return None

    def republish(self, body: str | None = None) -> DeadLetter | None:
        """What "re-publish" does: send the editor's body (``body`` typed in first, if given) to the
        selected letter's service, remove the letter, look again."""
        if body is not None:
            self.body.value = body
        return self._act("re-published to", lambda letter: republish(
            letter, self.body.value, exchange=self.exchange, url=self.url))

    def discard(self) -> DeadLetter | None:
        """What "discard" does: remove the selected letter for good, look again."""
        return self._act("discarded, was for", lambda letter: discard(letter, exchange=self.exchange, url=self.url))

    def _act(self, verb: str, action: Callable[[DeadLetter], DeadLetter]) -> DeadLetter | None:
        letter = self.selected
        if letter is None:
            self.last_error = "no dead letter selected: look again, then choose one"
            self.say(self.last_error)
            return None
        done = self._attempt(lambda: action(letter))
        if done is not None:
            self.last_result = done
            self.say(f"{verb} {done.service}: {done.text}")
            self.refresh()
        return done


__all__ = ["DeadLetter", "DeadLetterError", "DeadLetterPanel", "peek", "republish", "discard"]
