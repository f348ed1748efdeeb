"""Memory bound of the pipeline (a resource check, not a timing): ``parotid-seg segment`` with the shipped bundle on
the default runtime, on a sample patient's DICOM series (128 x 128 pixels, a smaller input than the bench's), must
peak below ``PEAK_RSS_BOUND`` (the child's ru_maxrss from ``os.wait4``).

Measured (2 cores, OpenVINO): about 0.75 GiB; TensorFlow peaks near 1.9 GiB on the same input. The bench reports
the peak per path and input size (docs/benchmarks.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.model_bundle import resolve_bundle
from service.runtimes import choose_runtime

REPO = Path(__file__).resolve().parents[1]
GiB = 1024**3
PEAK_RSS_BOUND = int(1.0 * GiB)


@pytest.mark.slow
def test_segment_peak_rss_is_bounded_on_the_default_runtime(sample_series_factory, tmp_path: Path) -> None:
    series = sample_series_factory("pt_201")
    runtime = choose_runtime(resolve_bundle(None).path)
    assert runtime != "tensorflow", "the shipped bundle should serve on the optimized CPU runtime by default"
    env = {k: v for k, v in os.environ.items() if k != "PAROTID_RUNTIME"}
    argv = [sys.executable, "-m", "service.cli", "segment", str(series.ct_dir), "--output", str(tmp_path / "RS.dcm")]
    argv += ["--qa", str(tmp_path / "qa.json"), "--preview", str(tmp_path / "preview.png"), "--quiet"]
    proc = subprocess.Popen(argv, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, err.decode()[-3000:]
    peak = usage.ru_maxrss * 1024
    assert peak <= PEAK_RSS_BOUND, f"{runtime}: peak RSS {peak / GiB:.2f} GiB > {PEAK_RSS_BOUND / GiB:.2f} GiB"
