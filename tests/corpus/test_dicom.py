"""Every DICOM-shaped corpus case over DICOM: a pynetdicom SCU sends the case's files as they are (bytes from the
file, no re-encoding) in one association to one in-process listener on the service's job store (embedded pool,
oracle bundle). Checked per case: the association outcome, the C-STORE status of every instance, what became of
each stored series (job succeeded / failed with its code, or refused by the pipeline's checks with its code), that
the listener still answers C-ECHO afterwards, and that nothing is half-written in the spool or the job store."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE, _config
from pynetdicom.dsutils import split_dataset
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from service.listener.sop_classes import DROPPED_SOP_CLASSES
from tests.corpus import DICOM_CASE_NAMES
from tests.corpus.checks import finished_job_problems, spool_leftovers, store_leftovers
from tests.corpus.model import DROPPED, NO_CONTEXT, Case, DicomSend
from tests.support.dicom import c_echo

LISTENER_AE = "PAROTID_SEG"
OUTCOME_TIMEOUT_S = 120.0


@dataclass
class Observed:
    association: str = "accepted"
    statuses: Counter = field(default_factory=Counter)
    stored_sops: dict[str, set[str]] = field(default_factory=dict)  # series UID -> stored SOP Instance UIDs
    dropped_series: set[str] = field(default_factory=set)  # series UIDs of objects answered Success and dropped
    echo_after: bool = False
    outcomes: tuple[str, ...] = ()


def send_case(port: int, send: DicomSend) -> Observed:
    """One association; each file sent as stored. An instance whose presentation context the listener did not
    accept cannot be sent at all (NO_CONTEXT)."""
    obs = Observed()
    ae = AE(ae_title=send.calling_ae)
    metas = {f: split_dataset(f)[0] for f in send.files}
    for sop, ts in sorted({(str(m.MediaStorageSOPClassUID), str(m.TransferSyntaxUID)) for m in metas.values()}):
        ae.add_requested_context(sop, ts)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title=send.called_ae)
    if not assoc.is_established:
        obs.association = "rejected"
        return obs
    chunked = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True  # the file's bytes as they are, even when pydicom cannot read them
    try:
        for f in send.files:
            try:
                status = assoc.send_c_store(f)
            except ValueError:  # no accepted presentation context for this SOP class / transfer syntax
                obs.statuses[NO_CONTEXT] += 1
                continue
            label = f"0x{status.Status:04X}" if "Status" in status else "no response"
            if label == "0x0000":
                ds = pydicom.dcmread(f, stop_before_pixels=True, force=True)
                if str(metas[f].MediaStorageSOPClassUID) in DROPPED_SOP_CLASSES:
                    label = DROPPED  # the listener's whole-study rule: Success, nothing kept (checked below)
                    obs.dropped_series.add(str(ds.SeriesInstanceUID))
                else:
                    obs.stored_sops.setdefault(str(ds.SeriesInstanceUID), set()).add(str(ds.SOPInstanceUID))
            obs.statuses[label] += 1
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = chunked
    assoc.release()
    return obs


def series_outcome(records: list[dict], series_uid: str) -> str | None:
    for r in records:
        if r.get("series_uid") != series_uid:
            continue
        if r["event"] == "job_rejected":
            return f"rejected:{r['error_code']}"
        if r["event"] == "series_refused":
            return f"refused:{r['reason']}"
        if r["event"] == "job_finished":
            return "succeeded" if r["job_state"] == "succeeded" else f"failed:{r['error_code']}"
    return None


@pytest.fixture(scope="module")
def dicom_run(tmp_path_factory: pytest.TempPathFactory, corpus: dict[str, Case], corpus_model_store: Path) -> Iterator:
    """Start the listener, send every DICOM case, wait until every stored series has an outcome."""
    from service.config import Settings
    from service.jobs.service import JobService
    from service.listener.jobs import ServiceJobBackend
    from service.listener.listener import Listener
    from service.listener.settings import load_settings
    from service.worker.dispatcher import make_dispatcher

    root = tmp_path_factory.mktemp("corpus_dicom")
    jobs = JobService.from_settings(
        Settings(job_dir=root / "jobs", model_store=corpus_model_store, broker_url=None, min_free_disk_bytes=0),
        make_dispatcher,
    )
    settings = load_settings(
        spool_dir=root / "spool",
        port=0,
        bind_host="127.0.0.1",
        quiet_time_s=5.0,
        release_grace_s=0.2,
        poll_interval_s=0.2,
        network_timeout_s=10.0,
        min_free_disk_mb=0,
        peers=[{"ae_title": "SCANNER", "return_mode": "none"}],
    )
    listener = Listener(settings, ServiceJobBackend(jobs)).start(port=0)
    try:
        observed: dict[str, Observed] = {}
        for name in DICOM_CASE_NAMES:
            send = corpus[name].dicom
            assert send is not None
            observed[name] = send_case(listener.port, send)
            observed[name].echo_after = c_echo(listener.port, "SCANNER", LISTENER_AE)
        deadline = time.monotonic() + OUTCOME_TIMEOUT_S
        while True:
            records = listener.audit.read()
            for obs in observed.values():
                obs.outcomes = tuple(sorted(o for o in (series_outcome(records, uid) for uid in obs.stored_sops) if o))
            if all(len(o.outcomes) == len(o.stored_sops) for o in observed.values()) and listener.idle():
                break
            if time.monotonic() > deadline:
                break  # the per-case tests report what is missing
            time.sleep(0.2)
        yield listener, jobs, observed
    finally:
        listener.stop()
        jobs.close()


@pytest.mark.parametrize("name", DICOM_CASE_NAMES)
def test_dicom_case(name: str, corpus: dict[str, Case], dicom_run) -> None:
    listener, _, observed = dicom_run
    want, got = corpus[name].dicom_expect, observed[name]
    assert want is not None
    assert got.association == want.association
    assert dict(got.statuses) == want.statuses
    assert got.outcomes == want.outcomes, f"stored series {sorted(got.stored_sops)}"
    assert got.echo_after, "the listener did not answer C-ECHO after the case"
    refused = any(o.startswith("refused:") for o in got.outcomes)
    for uid, sops in got.stored_sops.items():  # exactly the accepted instances are spooled, nothing else
        kept = [] if refused else sorted(sops)  # a series refused while it arrived: its spooled part is dropped
        assert sorted(p.stem for p in listener.spool.series_files(uid)) == kept
    for uid in got.dropped_series:  # dropped objects leave nothing in the spool
        assert not listener.spool.series_files(uid)


def test_dicom_nothing_half_written(dicom_run) -> None:
    listener, jobs, _ = dicom_run
    assert listener.idle()
    assert spool_leftovers(listener.spool.root) == []
    assert store_leftovers(jobs.store.root) == []
    assert finished_job_problems(jobs.store.root) == []
    associations = [r for r in listener.audit.read() if r["event"] == "association"]
    assert len(associations) >= 2 * len(DICOM_CASE_NAMES)  # every case's association and its C-ECHO, all logged


def test_dicom_case_list_matches_the_corpus(corpus: dict[str, Case]) -> None:
    assert sorted(DICOM_CASE_NAMES) == sorted(n for n, c in corpus.items() if c.dicom is not None)
    assert len(DICOM_CASE_NAMES) >= 30
