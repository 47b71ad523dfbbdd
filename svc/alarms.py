"""etcd's alarms as svc's writers see them: NOSPACE (its space quota exceeded) or CORRUPT.

Under NOSPACE etcd takes reads and deletes, and refuses every write: svc processes nothing (fail
closed, events requeued with backoff and counted as ``<service>_dedup_unavailable``) and says so
once, with the fix, when the alarm is first met and again when it is cleared. etcd 3.4/3.5 count
toward the quota only the puts at a transaction's top level: flat claims and commits are counted;
claims sent one nested transaction per event carry a put in a never-taken failure branch
(svc.batch.InFlight's ``quota_key``) so that etcd refuses them whole too. Mixed into svc.dedup's classes, which set ``alarm`` (""), ``etcd`` and ``service``.
"""

import logging

from . import etcd as _etcd
from .errors import DedupUnavailable

log = logging.getLogger("svc.dedup")


class Alarms:
    """``alarm``: the alarms etcd has raised, comma-separated ("" for none); no writes while set."""

    alarm = ""

    def _on_error(self, error: DedupUnavailable) -> None:
        """A request failed (the events it carried are requeued): learn what the error says."""
        log.debug("%s", error)
        if isinstance(error, _etcd.NoSpace):
            self._set_alarm("NOSPACE")

    def _check_alarms(self) -> None:
        """Read etcd's alarm list (at start, and before each window while an alarm is known, to
        see it cleared); raises DedupUnavailable when etcd does not answer."""
        self._set_alarm(",".join(self.etcd.alarms()))

    def _set_alarm(self, alarm: str) -> None:
        """Note the alarms etcd has raised; one line when they change: the cause and the fix."""
        if alarm == self.alarm:
            return
        if "NOSPACE" in alarm.split(","):
            log.error("%s; until then events are requeued with backoff and counted as %s_dedup_unavailable",
                      _etcd.NOSPACE_HELP, self.service)
        elif alarm:
            log.error("etcd raised the alarm %s: deduplication writes nothing until an operator clears it "
                      "(`etcdctl alarm list`, etcd's maintenance guide)", alarm)
        else:
            log.warning("etcd's alarm %s is cleared: deduplication writes again", self.alarm)
        self.alarm = alarm
