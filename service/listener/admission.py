"""Fair use of the association slots by peers that are allowed in (issue 16).

The front door (``server.py``) bounds connections that have not sent an A-ASSOCIATE-RQ. A peer whose calling AE
title is allowed can still open associations and then send nothing: each would hold a slot for the network
timeout, and ``max_associations`` of them lock every other sender out. Two rules here:

- at most ``max_associations_per_peer`` associations per calling AE title at once, counted when the
  A-ASSOCIATE-RQ arrives (pynetdicom's ``EVT_REQUESTED``, before negotiation); one more is answered with an
  A-ASSOCIATE-RJ, rejected-transient, service-provider (presentation), local limit exceeded (PS3.8 9.3.4), and
  audited as ``association`` / ``rejected`` with the reason (AE title and address only, never a data-set value);
- an established association that has sent no DIMSE message yet times out (A-ABORT) after
  ``idle_association_timeout_s`` instead of ``network_timeout_s``; its first C-ECHO or C-STORE restores the
  network timeout.

Hand-written because pynetdicom counts only all associations together (``maximum_associations``); it uses
pynetdicom's documented hook (a rejection sent from ``EVT_REQUESTED``) and per-association ``network_timeout``.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from pynetdicom import evt

from service.listener.audit import AuditLog

log = logging.getLogger(__name__)

REJECT_TRANSIENT, SOURCE_PRESENTATION, LOCAL_LIMIT_EXCEEDED = 0x02, 0x03, 0x02
REASON_PER_PEER = "per-peer association limit exceeded"


class PeerAdmission:
    def __init__(self, audit: AuditLog, *, per_peer: int, idle_s: float, network_timeout_s: float) -> None:
        self.audit = audit
        self.per_peer = per_peer
        self.idle_s = min(idle_s, network_timeout_s)
        self.network_timeout_s = network_timeout_s
        self._live: dict[int, tuple[str, Any]] = {}  # id(assoc) -> (calling AE title, assoc)
        self._quiet: set[int] = set()  # established associations that have sent no DIMSE message yet
        self._lock = threading.Lock()

    def handlers(self) -> list[Any]:
        return [
            (evt.EVT_REQUESTED, self.on_requested),
            (evt.EVT_ESTABLISHED, lambda event: self.established(event.assoc)),
            (evt.EVT_DIMSE_RECV, lambda event: self.dimse_received(event.assoc)),
            (evt.EVT_CONN_CLOSE, lambda event: self.ended(event.assoc)),
        ]

    def on_requested(self, event: evt.Event) -> None:
        a = event.assoc
        rq = a.requestor
        calling = str(getattr(rq.primitive, "calling_ae_title", "") or "").strip()
        with self._lock:
            self._live = {k: v for k, v in self._live.items() if _alive(v[1])}
            n_open = sum(1 for ae, _ in self._live.values() if ae == calling)
            if n_open < self.per_peer:
                self._live[id(a)] = (calling, a)
                return
        log.warning(
            "rejecting an association from %s at %s: %d of its associations open (limit %d per AE title)",
            calling,
            rq.address,
            n_open,
            self.per_peer,
        )
        self.audit.record(
            "association",
            calling_ae=calling,
            called_ae=str(getattr(rq.primitive, "called_ae_title", "") or "").strip(),
            peer_host=rq.address,
            peer_port=rq.port,
            outcome="rejected",
            reason=REASON_PER_PEER,
            n_stored=0,
            n_refused=0,
            series_uids=[],
        )
        a.acse.send_reject(REJECT_TRANSIENT, SOURCE_PRESENTATION, LOCAL_LIMIT_EXCEEDED)
        a.kill()

    def established(self, assoc: Any) -> None:
        """Start the short idle timeout of an association that has sent no DIMSE message yet."""
        with self._lock:
            self._quiet.add(id(assoc))
        assoc.network_timeout = self.idle_s

    def dimse_received(self, assoc: Any) -> None:
        """The association has sent a DIMSE message: the normal network timeout from now on."""
        with self._lock:
            if id(assoc) not in self._quiet:
                return
            self._quiet.discard(id(assoc))
        assoc.network_timeout = self.network_timeout_s

    def ended(self, assoc: Any) -> None:
        with self._lock:
            self._quiet.discard(id(assoc))
            self._live.pop(id(assoc), None)

    def open_for(self, calling_ae: str) -> int:
        with self._lock:
            return sum(1 for ae, a in self._live.values() if ae == calling_ae and _alive(a))


def _alive(assoc: Any) -> bool:
    return bool(assoc.is_alive()) and not (assoc.is_aborted or assoc.is_released or assoc.is_rejected)
