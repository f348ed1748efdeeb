"""Write the OpenKBP sample patients as commissioning patient folders: CT series + RTSTRUCT + RTDOSE.

    PAROTID_SHARED_DIR=../shared .venv/bin/python scripts/sample_patients_dicom.py OUT_DIR

One folder per sample (OUT_DIR/pt_N/{ct/, RS.dcm, RD.dcm}), the clinical contours under clinic-style ROI names
("Parotid L", "PAROTID_RT": matched by the default synonyms) and the clinical plan dose. For trying
`parotid-seg evaluate` (docs/commissioning.md); the same writer as the tests (tests/commission_factory.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.commission_factory import write_patient  # noqa: E402
from tests.conftest import SAMPLE_DIR, SAMPLE_PATIENTS, load_sample_canonical  # noqa: E402
from tests.dicom_factory import openkbp_to_canonical  # noqa: E402


def main(out: Path) -> None:
    for patient in SAMPLE_PATIENTS:
        hu, spacing, left, right = load_sample_canonical(patient)
        dose = openkbp_to_canonical(np.load(SAMPLE_DIR / f"{patient}.npz")["dose_gy"])
        nz, ny, nx = hu.shape
        origin = (-(nx - 1) * spacing[2] / 2, -(ny - 1) * spacing[1] / 2, -300.0)
        write_patient(out / patient, hu, spacing, origin, {"Parotid L": left, "PAROTID_RT": right}, dose)
        print(f"wrote {out / patient}", file=sys.stderr)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
