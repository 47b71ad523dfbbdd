"""The effects the kit's services left (:mod:`svc.effects`), read where they wrote them.

Same calls as :mod:`svc.effects`, with the kit's etcd endpoints and prefix (ETCD_ENDPOINTS,
ETCD_PREFIX: :mod:`nirvana.settings`) filled in, so a notebook counts the keys its services
wrote whatever prefix the learner exported.
"""

from __future__ import annotations

from svc import effects

from .settings import current


def _where(client, prefix: str | None) -> dict:
    """The client (the kit's etcd, logged in as its settings say, when None) and prefix to read."""
    settings = current()
    return {"client": client or settings.etcd_endpoint, "prefix": prefix or settings.etcd_prefix,
            "access": settings.etcd_access}


def count(client, service: str, event_id: str | None = None, *, prefix: str | None = None) -> int:
    """How many times ``service`` processed ``event_id`` (or any event, when None).

    ``client``: an :class:`svc.Etcd`, an endpoint list such as ``"127.0.0.1:2379"``, or None
    for the kit's etcd. Raises :class:`svc.DedupUnavailable` when etcd does not answer.
    """
    where = _where(client, prefix)
    return effects.count(where.pop("client"), service, event_id, **where)


def counts_by_id(client, service: str, *, prefix: str | None = None) -> dict[str, int]:
    """``{event id: times processed}`` for every event ``service`` processed."""
    where = _where(client, prefix)
    return effects.counts_by_id(where.pop("client"), service, **where)


def records(client, service: str, *, prefix: str | None = None) -> list[dict]:
    """Every effect record of ``service`` (id, type, action, pid, and ``at``: Unix time, seconds)."""
    where = _where(client, prefix)
    return effects.records(where.pop("client"), service, **where)


__all__ = ["count", "counts_by_id", "records"]
