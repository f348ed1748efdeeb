"""The CLI imports no network runtime where none is needed: ``--help``, ``models list`` and a rejected input
answer without TensorFlow (or Keras, ONNX Runtime) in ``sys.modules``; the input is checked before the model loads.

Each case runs ``service.cli.main`` in a fresh interpreter and reports the modules loaded afterwards (a check of
what was imported, not a timing)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.dicom_factory import write_ct_series

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("tensorflow", "keras", "onnxruntime", "torch")

_PROBE = """
import contextlib, io, json, sys
from service.cli import main
err = io.StringIO()
with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
    try:
        rc = main(json.loads(sys.argv[1]))
    except SystemExit as exc:
        rc = exc.code
heavy = sorted({m.split('.')[0] for m in sys.modules} & set(json.loads(sys.argv[2])))
print(json.dumps({"rc": rc, "heavy": heavy, "stderr": err.getvalue()}))
"""


def _run_cli(argv: list[str]) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(argv), json.dumps(HEAVY)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("argv", [["--help"], ["segment", "--help"], ["models", "list"]])
def test_help_and_models_list_import_no_runtime(argv: list[str]) -> None:
    out = _run_cli(argv)
    assert out["rc"] == 0, out["stderr"]
    assert out["heavy"] == []


def test_rejected_series_answers_before_the_model_loads(tmp_path: Path) -> None:
    ct_dir = tmp_path / "ct"
    write_ct_series(ct_dir, np.zeros((5, 32, 32), dtype=np.float32), (2.5, 1.0, 1.0))  # fewer than min_slices
    out = _run_cli(["segment", str(ct_dir), "--output", str(tmp_path / "RS.dcm"), "--quiet"])
    assert out["rc"] == 2
    assert out["stderr"].startswith("error[") and "slice" in out["stderr"].lower(), out["stderr"]
    assert out["heavy"] == [], f"a rejected input imported {out['heavy']}"
    assert not (tmp_path / "RS.dcm").exists()


def test_empty_input_folder_is_rejected_without_a_runtime(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    out = _run_cli(["segment", str(tmp_path / "empty"), "--output", str(tmp_path / "RS.dcm")])
    assert out["rc"] == 2 and "error[EMPTY_INPUT]" in out["stderr"], out["stderr"]
    assert out["heavy"] == []
