"""The pynetdicom side: the application entity, its presentation contexts and its event handlers.

Supported: Verification (C-ECHO) and CT Image Storage (C-STORE) in the transfer syntaxes the pipeline decodes,
plus the other storage SOP classes a PACS or modality sends with a study (``sop_classes.DROPPED_SOP_CLASSES``:
MR, PET, RTSTRUCT, RTPLAN, RTDOSE, RT Image, secondary capture, SR, KOS, PDF, presentation states, SEG, ...), which
are answered Success, never decoded or kept, and counted by SOP class name in the association's audit line
(``dropped``), so a whole-study send never fails because of them.
Association policy: the called AE title must be ours (unless ``require_called_ae`` is off) and the calling AE
title must be in the allow-list (unless ``allow_unknown_ae``). C-STORE statuses are decided here, in one place:

=========  =====================================================================================
0x0000     stored (spooled atomically), or a non-CT storage SOP class dropped (``dropped`` in the audit line)
0xA700     Refused, out of resources: free disk below the watermark, or the write failed, or a deflated data
           set that inflates beyond ``inflate.MAX_INFLATED_BYTES`` (measured by a streaming inflate, before
           parsing), or a C-STORE handled after its association ended, or its series over the memory budget
           from the headers received so far (``series_budget``)
0xA900     Data set does not match SOP class: missing or invalid (0008,0016) SOP Class UID,
           (0008,0018) SOP Instance UID, (0020,000E) Series Instance UID, (0008,0060) Modality not CT,
           no (7FE0,0010) Pixel Data, or a native (uncompressed) Pixel Data shorter than Rows x Columns x
           Samples per Pixel x Number of Frames x Bits Allocated / 8 (a truncated instance)
0xC210     Cannot understand: the data set could not be decoded
=========  =====================================================================================

The handlers never raise: an exception inside one becomes a failure status for that instance only.
"""

from __future__ import annotations

import itertools
import logging
import ssl
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, cast

from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from service.listener.admission import PeerAdmission
from service.listener.audit import AuditLog
from service.listener.series_budget import SeriesBudget, Verdict
from service.listener.server import start_guarded_server
from service.listener.settings import ListenerSettings
from service.listener.sop_classes import DROPPED_SOP_CLASSES, DROPPED_TRANSFER_SYNTAXES, sop_class_label
from service.listener.spool import Spool, is_valid_uid
from service.listener.tracker import Origin, SeriesTracker
from service.pipeline.inflate import MAX_INFLATED_BYTES, inflated_size_exceeds
from service.pipeline.series_pixels import native_pixel_data_bytes

log = logging.getLogger(__name__)

STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_DATASET_MISMATCH = 0xA900
STATUS_CANNOT_UNDERSTAND = 0xC210

CT_TRANSFER_SYNTAXES = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGLosslessSV1,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
]


@dataclass
class AssociationRecord:
    assoc_id: int  # id() of the pynetdicom Association: the key of the open-associations table
    seq: int  # the listener's association number (never reused): the tracker's key and the audit log's
    calling_ae: str
    called_ae: str
    peer_host: str
    peer_port: int
    tls: bool
    statuses: Counter = field(default_factory=Counter)
    dropped: Counter = field(default_factory=Counter)  # SOP class name -> instances accepted and dropped
    series_uids: set[str] = field(default_factory=set)
    outcome: str | None = None

    @property
    def origin(self) -> Origin:
        return Origin(self.calling_ae, self.peer_host)


def build_ssl_context(settings: ListenerSettings) -> ssl.SSLContext | None:
    """Server-side TLS (1.2+) from ``tls_cert_file``/``tls_key_file``; ``tls_ca_file`` requires client certs."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(settings.tls_cert_file), str(settings.tls_key_file))
    if settings.tls_ca_file is not None:
        ctx.load_verify_locations(cafile=str(settings.tls_ca_file))
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def build_ae(settings: ListenerSettings) -> AE:
    ae = AE(ae_title=settings.ae_title)
    ae.require_called_aet = settings.require_called_ae
    ae.require_calling_aet = [] if settings.allow_unknown_ae else settings.allowed_ae_titles
    ae.maximum_associations = settings.max_associations
    ae.network_timeout = settings.network_timeout_s
    ae.acse_timeout = min(settings.network_timeout_s, settings.artim_timeout_s)
    ae.dimse_timeout = settings.network_timeout_s
    ae.add_supported_context(Verification)
    ae.add_supported_context(CTImageStorage, CT_TRANSFER_SYNTAXES)
    for sop_class in DROPPED_SOP_CLASSES:
        ae.add_supported_context(sop_class, DROPPED_TRANSFER_SYNTAXES)
    return ae


class StorageHandlers:
    """Event handlers bound to one spool, tracker and audit log (one instance per listener)."""

    def __init__(
        self,
        spool: Spool,
        tracker: SeriesTracker,
        audit: AuditLog,
        admission: PeerAdmission | None = None,
        series_budget: SeriesBudget | None = None,
    ) -> None:
        self.admission = admission  # per-peer association limit and idle timeout (admission.py)
        self.series_budget = series_budget  # the memory budget per series, on every C-STORE (series_budget.py)
        self.spool = spool
        self.tracker = tracker
        self.audit = audit
        self._records: dict[int, AssociationRecord] = {}
        self._seq = itertools.count(1)
        self._lock = threading.Lock()

    def handlers(self) -> list[Any]:
        return [
            (evt.EVT_ESTABLISHED, self.on_established),
            (evt.EVT_C_ECHO, self.on_echo),
            (evt.EVT_C_STORE, self.on_store),
            (evt.EVT_RELEASED, self.on_released),
            (evt.EVT_ABORTED, self.on_aborted),
            (evt.EVT_CONN_CLOSE, self.on_conn_close),
            (evt.EVT_REJECTED, self.on_rejected),
            *(self.admission.handlers() if self.admission is not None else []),
        ]

    # --- association lifecycle
    def on_established(self, event: evt.Event) -> None:
        a = event.assoc
        with self._lock:
            rec = AssociationRecord(
                id(a),
                next(self._seq),
                a.requestor.ae_title.strip(),
                a.acceptor.ae_title.strip(),
                a.requestor.address,
                a.requestor.port,
                _is_tls(a),
            )
            self._records[rec.assoc_id] = rec

    def on_rejected(self, event: evt.Event) -> None:
        a = event.assoc
        rq = a.requestor
        self.audit.record(
            "association",
            calling_ae=str(rq.ae_title).strip(),
            called_ae=_called_ae(a),
            peer_host=rq.address,
            peer_port=rq.port,
            outcome="rejected",
            reason=_reject_reason(a),
            n_stored=0,
            n_refused=0,
            series_uids=[],
        )

    def on_released(self, event: evt.Event) -> None:
        self._finish(id(event.assoc), "released")

    def on_aborted(self, event: evt.Event) -> None:
        self._finish(id(event.assoc), "aborted")

    def on_conn_close(self, event: evt.Event) -> None:
        self._finish(id(event.assoc), "aborted")  # no-op if already released/aborted

    def _finish(self, assoc_id: int, outcome: str) -> None:
        with self._lock:
            rec = self._records.pop(assoc_id, None)
        if rec is None:
            return
        rec.outcome = outcome
        self.tracker.association_ended(rec.seq, released=outcome == "released")
        n_dropped = sum(rec.dropped.values())
        n_stored = rec.statuses.get(STATUS_SUCCESS, 0) - n_dropped
        self.audit.record(
            "association",
            assoc_id=rec.seq,
            calling_ae=rec.calling_ae,
            called_ae=rec.called_ae,
            peer_host=rec.peer_host,
            peer_port=rec.peer_port,
            tls=rec.tls,
            outcome=outcome,
            n_stored=n_stored,
            n_refused=sum(rec.statuses.values()) - n_stored - n_dropped,
            n_dropped=n_dropped,
            dropped=dict(sorted(rec.dropped.items())),
            statuses={f"0x{k:04X}": v for k, v in sorted(rec.statuses.items())},
            series_uids=sorted(rec.series_uids),
        )

    # --- DIMSE
    def on_echo(self, event: evt.Event) -> int:
        return STATUS_SUCCESS

    def on_store(self, event: evt.Event) -> int:
        with self._lock:
            rec = self._records.get(id(event.assoc))
        try:
            status, series_uid = self._store(event, rec)
        except Exception:  # noqa: BLE001 - a handler must answer, never crash the listener
            log.exception("C-STORE handler failed")
            status, series_uid = STATUS_CANNOT_UNDERSTAND, None
        if rec is not None:
            rec.statuses[status] += 1
            if series_uid is not None and status == STATUS_SUCCESS:
                rec.series_uids.add(series_uid)
        return status

    def _store(self, event: evt.Event, rec: AssociationRecord | None) -> tuple[int, str | None]:
        if rec is None:  # its association has already ended (connection dropped): nobody hears the answer
            log.warning("refusing C-STORE handled after its association ended")
            return STATUS_OUT_OF_RESOURCES, None
        req: Any = event.request
        requested_class = str(req.AffectedSOPClassUID)
        if requested_class in DROPPED_SOP_CLASSES:  # part of a study send: accepted, not decoded, not kept
            rec.dropped[sop_class_label(requested_class)] += 1
            return STATUS_SUCCESS, None
        if str(event.context.transfer_syntax) == DeflatedExplicitVRLittleEndian:
            raw = cast(Any, event.request).DataSet
            if raw is not None:
                raw.seek(0)
                too_large = inflated_size_exceeds(raw, MAX_INFLATED_BYTES)
                raw.seek(0)
                if too_large:
                    log.warning("refusing C-STORE: deflated data set inflates beyond %d bytes", MAX_INFLATED_BYTES)
                    return STATUS_OUT_OF_RESOURCES, None
        data = event.encoded_dataset(include_meta=True)
        if not self.spool.has_room(len(data)):
            log.warning("refusing C-STORE: free disk below the watermark in %s", self.spool.root)
            return STATUS_OUT_OF_RESOURCES, None
        try:
            ds = event.dataset
            for _ in ds:  # decode every top-level element now, not later in the pipeline
                pass
            sop_class = str(ds.get("SOPClassUID", "")).strip()
            sop_uid = str(ds.get("SOPInstanceUID", "")).strip()
            series_uid = str(ds.get("SeriesInstanceUID", "")).strip()
            modality = str(ds.get("Modality", "")).strip().upper()
            has_pixels = "PixelData" in ds
            pixels_short = has_pixels and pixel_data_too_short(ds, UID(str(event.context.transfer_syntax)))
        except Exception as exc:  # noqa: BLE001 - any decoding failure of peer data
            log.warning("C-STORE data set could not be decoded: %s", type(exc).__name__)
            return STATUS_CANNOT_UNDERSTAND, None
        if (
            sop_class != CTImageStorage
            or sop_class != requested_class
            or sop_uid != str(req.AffectedSOPInstanceUID)
            or not is_valid_uid(sop_uid)
            or not is_valid_uid(series_uid)
            or modality != "CT"
            or not has_pixels
        ):
            log.warning(
                "C-STORE data set does not match CT Image Storage (SOP class/instance UID, series UID, "
                "modality or pixel data)"
            )
            return STATUS_DATASET_MISMATCH, None
        if pixels_short:
            log.warning(
                "C-STORE data set refused: (7FE0,0010) Pixel Data is shorter than (0028,0010) Rows x "
                "(0028,0011) Columns x samples x frames x bytes per sample (truncated?)"
            )
            return STATUS_DATASET_MISMATCH, None
        if self.series_budget is not None:
            verdict = self.series_budget.admit(series_uid, sop_uid, ds)
            if not verdict.ok:
                if verdict.first_refusal:
                    self._refuse_series(series_uid, verdict)
                return STATUS_OUT_OF_RESOURCES, None
        try:
            self.spool.store_instance(series_uid, sop_uid, data)
        except OSError as exc:
            log.error("spool write failed: %s", exc.strerror or type(exc).__name__)
            return STATUS_OUT_OF_RESOURCES, None
        # the association may have ended meanwhile (the TCP connection dropped while this C-STORE was handled):
        # the tracker knows ended associations by their number and keeps such a series aborted
        self.tracker.instance_received(rec.seq, series_uid, sop_uid, rec.origin)
        return STATUS_SUCCESS, series_uid

    def _refuse_series(self, series_uid: str, verdict: Verdict) -> None:
        """The series went over the memory budget: what was spooled of it is dropped (never a job), audited."""
        assert self.series_budget is not None
        budget_mib = round(self.series_budget.budget_bytes / 2**20, 1)
        need_mib = round(verdict.need_bytes / 2**20, 1)
        log.warning(
            "refusing C-STORE: its series needs about %.1f MiB with %d instances, more than the memory budget of "
            "%.1f MiB; the rest of the series is refused and its spooled instances are dropped",
            need_mib,
            verdict.n_instances,
            budget_mib,
        )
        self.tracker.forget(series_uid)
        self.spool.remove_series(series_uid)
        self.audit.record(
            "series_refused",
            series_uid=series_uid,
            reason="memory_budget",
            n_instances=verdict.n_instances,
            need_mib=need_mib,
            budget_mib=budget_mib,
        )

    def open_associations(self) -> int:
        with self._lock:
            return len(self._records)


def pixel_data_too_short(ds: Dataset, transfer_syntax: UID) -> bool:
    """True when a native (uncompressed) (7FE0,0010) Pixel Data holds fewer bytes than the Image Pixel attributes
    call for (the loader's own rule, ``series_pixels.native_pixel_data_bytes``): a truncated instance, refused
    before it reaches the spool. Encapsulated (compressed) Pixel Data has no fixed length: the pipeline checks it
    when it decodes."""
    if transfer_syntax.is_encapsulated:
        return False
    expected = native_pixel_data_bytes(ds)
    return expected is not None and len(ds.PixelData or b"") < expected


def _called_ae(assoc: Any) -> str:
    prim = getattr(assoc.requestor, "primitive", None)
    return str(getattr(prim, "called_ae_title", "") or "").strip()


def _is_tls(assoc: Any) -> bool:
    sock = getattr(getattr(assoc.dul, "socket", None), "socket", None)
    return isinstance(sock, ssl.SSLSocket)


def _reject_reason(assoc: Any) -> str:
    prim = getattr(assoc.acceptor, "primitive", None)
    key: tuple[Any, Any] = (getattr(prim, "result_source", None), getattr(prim, "diagnostic", None))
    reasons: dict[tuple[Any, Any], str] = {
        (1, 3): "calling AE title not recognised",
        (1, 7): "called AE title not recognised",
        (3, 2): "local limit exceeded",
    }
    return reasons.get(key, f"source {key[0]} diagnostic {key[1]}")


def start_server(ae: AE, settings: ListenerSettings, handlers: StorageHandlers, port: int | None = None):
    """Start the guarded threaded association server (non-blocking, ``server.GuardedAssociationServer``: bounded
    connections and threads, ARTIM timeout); returns the server object."""
    return start_guarded_server(
        ae,
        (settings.bind_host, settings.port if port is None else port),
        handlers.handlers(),
        build_ssl_context(settings),
        max_associations=settings.max_associations,
        max_pending=settings.max_pending_connections,
        artim_s=settings.artim_timeout_s,
    )
