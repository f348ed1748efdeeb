"""Memory bounds of the pipeline (a resource check, not a timing): ``parotid-seg segment`` with the shipped bundle
on a smaller input than the bench's (48 slices of 512 x 512 pixels, see ``wide_slab``), per network runtime; the
child's peak RSS (VmHWM, read by the child itself) must stay below the runtime's bound.

Measured on 2 cores (2026-12-02): OpenVINO 0.42 GiB, TensorFlow 0.81 GiB, with the QA's signals and uncertainty
map in the glands' boxes (``service/pipeline/gland_boxes.py``) and TensorFlow running a traced graph; before those
two changes 0.71 / 1.26 GiB. The bounds leave about 40 % headroom for allocator and library differences between
machines. The bench reports the peak per path and input size (docs/benchmarks.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from service.model_bundle import resolve_bundle
from service.runtimes import ONNX_FILE

REPO = Path(__file__).resolve().parents[1]
GiB = 1024**3
PEAK_RSS_BOUND = {"openvino": 0.6 * GiB, "tensorflow": 1.15 * GiB}


@pytest.fixture(scope="module")
def wide_slab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pt_201 on a clinical in-plane grid (512 x 512 pixels of 1 mm) but only 48 slices of 2.5 mm: whole-grid
    arrays are as large per slice as the bench's (a whole-grid float copy would show), the network's input small."""
    from bench.data import CLINICAL, load_sample_hu, resample_to_grid
    from tests.conftest import require_samples
    from tests.dicom_factory import write_ct_series

    require_samples()
    volume = resample_to_grid(*load_sample_hu("pt_201"), CLINICAL)
    mid = volume.shape[0] // 2
    slab = np.ascontiguousarray(volume[mid - 8 : mid + 40])
    out = tmp_path_factory.mktemp("wide-slab")
    write_ct_series(out, slab, (CLINICAL.slice_mm, CLINICAL.pixel_mm, CLINICAL.pixel_mm), (-255.5, -255.5, 0.0))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("runtime", sorted(PEAK_RSS_BOUND))
def test_segment_peak_rss_is_bounded(runtime: str, wide_slab: Path, tmp_path: Path) -> None:
    assert (resolve_bundle(None).path / ONNX_FILE).is_file(), "the shipped bundle has no ONNX export"
    env = {**os.environ, "PAROTID_RUNTIME": runtime}
    argv = [sys.executable, "-m", "service.cli", "segment", str(wide_slab), "--output", str(tmp_path / "RS.dcm")]
    argv += ["--qa", str(tmp_path / "qa.json"), "--preview", str(tmp_path / "preview.png"), "--quiet"]
    # The peak is read by the child itself (VmHWM of its own address space, which starts empty at exec): the
    # rusage of a child forked from a large pytest process inherits the parent's high-water mark across exec.
    hwm = tmp_path / "vmhwm_kib"
    wrapper = (
        "import sys; from service.cli import main; rc = main(sys.argv[1:]); "
        "line = next(x for x in open('/proc/self/status') if x.startswith('VmHWM:')); "
        f"open({str(hwm)!r}, 'w').write(line.split()[1]); sys.exit(rc)"
    )
    argv = [sys.executable, "-c", wrapper, *argv[3:]]
    proc = subprocess.run(argv, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=900)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    peak = int(hwm.read_text()) * 1024
    print(f"{runtime}: peak RSS {peak / GiB:.2f} GiB")
    bound = PEAK_RSS_BOUND[runtime]
    assert peak <= bound, f"{runtime}: peak RSS {peak / GiB:.2f} GiB > {bound / GiB:.2f} GiB"
