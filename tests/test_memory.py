"""Memory bounds of the pipeline (a resource check, not a timing): ``parotid-seg segment`` with the shipped bundle
on a sample patient's DICOM series (128 x 128 pixels, a smaller input than the bench's), per network runtime; the
child's peak RSS (ru_maxrss from ``os.wait4``) must stay below the runtime's bound.

Measured on 2 cores: OpenVINO about 0.65-0.85 GiB, TensorFlow about 1.8-2.1 GiB on inputs of this size; the bench
reports the peak per path and input size (docs/benchmarks.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.model_bundle import resolve_bundle
from service.runtimes import ONNX_FILE

REPO = Path(__file__).resolve().parents[1]
GiB = 1024**3
PEAK_RSS_BOUND = {"openvino": 1.0 * GiB, "tensorflow": 2.5 * GiB}


@pytest.mark.slow
@pytest.mark.parametrize("runtime", sorted(PEAK_RSS_BOUND))
def test_segment_peak_rss_is_bounded(runtime: str, sample_series_factory, tmp_path: Path) -> None:
    series = sample_series_factory("pt_201")
    assert (resolve_bundle(None).path / ONNX_FILE).is_file(), "the shipped bundle has no ONNX export"
    env = {**os.environ, "PAROTID_RUNTIME": runtime}
    argv = [sys.executable, "-m", "service.cli", "segment", str(series.ct_dir), "--output", str(tmp_path / "RS.dcm")]
    argv += ["--qa", str(tmp_path / "qa.json"), "--preview", str(tmp_path / "preview.png"), "--quiet"]
    proc = subprocess.Popen(argv, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, err.decode()[-3000:]
    peak = usage.ru_maxrss * 1024
    bound = PEAK_RSS_BOUND[runtime]
    assert peak <= bound, f"{runtime}: peak RSS {peak / GiB:.2f} GiB > {bound / GiB:.2f} GiB"
