"""Whole-study sends: the CT is kept and processed, every other storage object of the study is accepted, dropped
and counted in the audit line, and the sender sees Success for all of them (DCMTK storescu and a pynetdicom SCU
proposing compressed transfer syntaxes)."""

from __future__ import annotations

import pydicom
from pydicom.uid import JPEG2000, JPEGBaseline8Bit, RLELossless
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from service.listener.sop_classes import DROPPED_SOP_CLASSES
from tests.listener.conftest import LISTENER_AE, SCANNER_AE, audit, jobs_for_series, storescu, wait_for
from tests.study_factory import write_study_companions


def test_storescu_sends_a_whole_study_ct_kept_the_rest_dropped_with_success(
    start_listener, make_series, job_service, tmp_path
):
    listener = start_listener()
    series = make_series()
    companions = write_study_companions(tmp_path / "others", series.files[0])
    assert len(companions) == 6
    # interleaved, as a PACS sends a study (order of its database, not of series)
    files = [*companions[:3], *series.files, *companions[3:]]
    sent = storescu(listener.port, files)
    assert sent.returncode == 0, sent.stderr
    assert "Status" not in sent.stderr or "Success" in sent.stderr

    (assoc,) = wait_for(lambda: audit(listener, "association"), 10, "the association record")
    assert assoc["n_stored"] == 48 and assoc["n_refused"] == 0 and assoc["n_dropped"] == 6
    assert assoc["statuses"] == {"0x0000": 54}
    assert assoc["dropped"] == {
        "RT Structure Set Storage": 1,
        "Secondary Capture Image Storage": 1,
        "Encapsulated PDF Storage": 1,
        "Key Object Selection Document Storage": 1,
        "Grayscale Softcopy Presentation State Storage": 1,
        "MR Image Storage": 1,
    }
    assert assoc["series_uids"] == [series.series_uid]
    spooled = {p.stem for p in listener.spool.series_root.rglob("*.dcm")}
    assert spooled <= {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in series.files}
    (job,) = wait_for(lambda: jobs_for_series(job_service, series.series_uid), 30, "the job of the CT series")
    wait_for(lambda: str(job_service.get_job(job.id).state) == "succeeded", 120, "the job to succeed")
    assert len(job_service.list_jobs()) == 1  # nothing else became a job


def test_every_dropped_class_is_accepted_in_compressed_syntaxes_and_answered_success(
    start_listener, make_series, tmp_path
):
    listener = start_listener()
    series = make_series()
    sc = pydicom.dcmread(write_study_companions(tmp_path / "o", series.files[0], ("sc",))[0])
    scu = AE(ae_title=SCANNER_AE)
    proposed = {u: (JPEG2000, JPEGBaseline8Bit, RLELossless)[i % 3] for i, u in enumerate(DROPPED_SOP_CLASSES)}
    proposed[sc.SOPClassUID] = JPEG2000
    for sop_class, syntax in proposed.items():  # 48 + CT: within the 128 contexts of one association
        scu.add_requested_context(sop_class, [syntax])
    scu.add_requested_context(CTImageStorage)
    assoc = scu.associate("127.0.0.1", listener.port, ae_title=LISTENER_AE)
    assert assoc.is_established
    accepted = {str(cx.abstract_syntax): str(cx.transfer_syntax[0]) for cx in assoc.accepted_contexts}
    assert {u: accepted.get(u) for u in proposed} == proposed  # what the sender has: no transcoding needed
    # a secondary capture "compressed" (its bytes are never decoded by the listener)
    sc.file_meta.TransferSyntaxUID = JPEG2000
    sc.PixelData = pydicom.encaps.encapsulate([b"\xff\x4f\xff\x51" + b"\0" * 60])
    sc["PixelData"].VR = "OB"
    assert assoc.send_c_store(sc).Status == 0x0000
    assoc.release()
    (record,) = wait_for(lambda: audit(listener, "association"), 10, "the association record")
    assert record["dropped"] == {"Secondary Capture Image Storage": 1} and record["n_stored"] == 0
    assert not list(listener.spool.series_root.rglob("*.dcm"))
