"""Model-stage cost of the QA perturbation members on one validation patient (1.1.0, CPU).

Run: KERAS_BACKEND=tensorflow python bench/qa_members_cost.py (reads validation-pats/pt_204; never test-pats).
"""

import time
from pathlib import Path

from service.model_bundle import BundleRef, load_bundle
from service.pipeline.infer import predict_probabilities
from service.pipeline.preprocess import preprocess_volume
from service.pipeline.qa_perturb import predict_with_members
from service.pipeline.volume import Volume
from training.data.openkbp import read_patient

b = Path("model_store/parotid-unet3d/1.1.0")
loaded = load_bundle(BundleRef(b.parent.name, b.name, b))
case = read_patient(Path(".cache/openkbp/provided-data/validation-pats/pt_204"))
x = preprocess_volume(Volume(case.hu_zyx, case.spacing_mm_zyx, (0.0, 0.0, 0.0)), loaded.plan)
predict_probabilities(loaded.predict, x, loaded.plan)  # warm-up
for label, fn in (
    ("plan only (identity + LR flip)", lambda: predict_probabilities(loaded.predict, x, loaded.plan)),
    ("+ shift:1,1,1, scale:0.9 (shipped)", lambda: predict_with_members(loaded.predict, x, loaded.plan)),
    ("members, no extras", lambda: predict_with_members(loaded.predict, x, loaded.plan, ())),
):
    ts = []
    for _ in range(3):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    print(f"{label}: median {sorted(ts)[1]:.1f} s (runs {', '.join(f'{t:.1f}' for t in ts)})", flush=True)
