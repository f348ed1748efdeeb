"""Deflate bombs (issue 16.3): a small deflated file must be refused (INFLATED_TOO_LARGE / 0xA700) by a process
that cannot afford to inflate it. Each reader runs in a subprocess whose data segment (RLIMIT_DATA: heap and
anonymous mappings) may grow by only ``HEADROOM_MB`` after its imports: inflating the bomb whole would raise
MemoryError there. Memory-bound, never timed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian
from pynetdicom import AE, _config
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from tests.corpus.series_cases import write_series
from tests.dicom_variants import write_rtstruct_like
from tests.hostile_files import deflate_bomb
from tests.memlimit import LIMIT, REPO, run_limited

BOMB_BYTES = 1 << 30  # ~1 MB on disk


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bombs")
    ct = write_series(d / "ct", n_slices=3)
    rt = write_rtstruct_like(d / "rt.dcm", like=ct[0])
    return {
        "ct": deflate_bomb(ct[0], d / "ct_bomb.dcm", BOMB_BYTES),
        "rt": deflate_bomb(rt, d / "rt_bomb.dcm", BOMB_BYTES),
        "ct_small": deflate_bomb(ct[1], d / "ct_ok.dcm", 1 << 20),
    }


READERS = {
    "series headers (API door and jobs)": (
        "from service.pipeline.series_scan import read_dataset as f\nimport functools\n"
        "f = functools.partial(f, stop_before_pixels=True)",
        "ct",
    ),
    "series pixels (worker)": (
        "from service.pipeline.series_scan import read_dataset as f\nimport functools\n"
        "f = functools.partial(f, stop_before_pixels=False)",
        "ct",
    ),
    "reference RTSTRUCT (API door)": ("from service.jobs.ingest import check_reference as f", "rt"),
    "reference RTSTRUCT (QA)": (
        "from service.pipeline.rtstruct_read import read_rtstruct_masks\n"
        "def f(p):\n    return read_rtstruct_masks(p, None, ['Parotid_L'])",
        "rt",
    ),
}


@pytest.mark.parametrize("reader", list(READERS))
def test_deflate_bomb_refused_under_a_memory_limit(reader, bombs):
    imports, kind = READERS[reader]
    body = f"""
import sys
from pathlib import Path
from service.errors import InputError
{imports}
limit_memory()
try:
    f(Path(sys.argv[1]))
    print("READ")
except InputError as exc:
    print("CODE", exc.code)
except MemoryError:
    print("MemoryError")
"""
    done = run_limited(body, str(bombs[kind]))
    assert done.stdout.strip().splitlines()[-1:] == ["CODE INFLATED_TOO_LARGE"], done.stdout + done.stderr[-2000:]


def test_small_deflated_file_still_reads_under_the_limit(bombs):
    body = """
import sys
from pathlib import Path
from service.pipeline.series_scan import read_dataset
limit_memory()
ds, problem = read_dataset(Path(sys.argv[1]), stop_before_pixels=False)
print("ROWS", ds.Rows)
"""
    done = run_limited(body, str(bombs["ct_small"]))
    assert done.stdout.strip().splitlines()[-1:] == ["ROWS 48"], done.stdout + done.stderr[-2000:]


LISTENER = """
import sys, time
from pathlib import Path
from service.listener.audit import AuditLog
from service.listener.scp import StorageHandlers, build_ae, start_server
from service.listener.settings import load_settings
from service.listener.spool import Spool
from service.listener.tracker import SeriesTracker
root = Path(sys.argv[1])
settings = load_settings(spool_dir=root, port=0, bind_host="127.0.0.1", min_free_disk_mb=0,
                         peers=[{"ae_title": "SCANNER", "return_mode": "none"}])
handlers = StorageHandlers(Spool(root), SeriesTracker(30, 5, 600, 3600), AuditLog(root / "audit.jsonl"))
server = start_server(build_ae(settings), settings, handlers, 0)
limit_memory()
print("PORT", server.server_address[1], flush=True)
time.sleep(120)
"""


def test_listener_refuses_a_deflated_c_store_bomb_under_a_memory_limit(bombs, tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-c", LIMIT + LISTENER, str(tmp_path / "spool")],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("PORT"), line + (proc.stderr.read() if proc.poll() is not None else "")
        port = int(line.split()[1])
        ae = AE(ae_title="SCANNER")
        ae.add_requested_context(CTImageStorage, DeflatedExplicitVRLittleEndian)
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", port, ae_title="PAROTID_SEG")
        assert assoc.is_established
        chunked = _config.STORE_SEND_CHUNKED_DATASET
        _config.STORE_SEND_CHUNKED_DATASET = True  # the file's bytes as they are
        try:
            bomb = assoc.send_c_store(bombs["ct"])
            small = assoc.send_c_store(bombs["ct_small"])
        finally:
            _config.STORE_SEND_CHUNKED_DATASET = chunked
        echo = assoc.send_c_echo()
        assoc.release()
        assert (bomb.Status, small.Status, echo.Status) == (0xA700, 0x0000, 0x0000)
        assert proc.poll() is None, "the listener died"
        spooled = [p.name for p in (tmp_path / "spool").rglob("*.dcm")]
        assert len(spooled) == 1
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_inflate_measure_stops_at_the_end_of_the_stream():
    """A deflate stream followed by padding (pydicom pads to an even length) is measured, not looped over."""
    import io
    import zlib

    from service.pipeline.inflate import inflated_size_exceeds

    comp = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    data = comp.compress(bytes(5 << 20)) + comp.flush() + b"\0"
    assert inflated_size_exceeds(io.BytesIO(data), (5 << 20) - 1)
    assert not inflated_size_exceeds(io.BytesIO(data), 5 << 20)
