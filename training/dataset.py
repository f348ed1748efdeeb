"""Training arrays on the model grid (the plan's preprocessing contract) and the patch sampler.

``prepare_case`` applies exactly the serving preprocessing (``service.pipeline.preprocess``) to a case; labels are
resampled per gland (linear + 0.5 threshold) and encoded with the plan's label order. Prepared cases are cached
as ``.npz`` so a resumed run does not re-read the raw data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from service.pipeline.plan import Plan
from service.pipeline.preprocess import normalize_hu, preprocess_volume, resample_labels_to_spacing
from service.pipeline.volume import Volume
from training.data.case import CaseData


@dataclass
class PreparedCase:
    case_id: str
    image_zyx: np.ndarray  # float32 normalised, model grid
    label_zyx: np.ndarray  # uint8 label index (plan.labels), model grid
    present: tuple[str, ...]  # glands contoured for this patient
    body_points: np.ndarray | None = None  # (n, 3) voxels inside the body, filled lazily by ``body_points``


def prepare_case(case: CaseData, plan: Plan) -> PreparedCase:
    vol = Volume(case.hu_zyx, case.spacing_mm_zyx, (0.0, 0.0, 0.0))
    image = preprocess_volume(vol, plan)
    label = np.zeros(image.shape, dtype=np.uint8)
    for name, mask in case.masks.items():
        if name in plan.labels:
            m = resample_labels_to_spacing(mask, case.spacing_mm_zyx, plan.spacing_mm_zyx)
            label[m & (label == 0)] = plan.label_index(name)
    present = tuple(n for n in plan.labels[1:] if n in case.masks)
    return PreparedCase(case.case_id, image, label, present)


def save_prepared(pc: PreparedCase, path: Path) -> None:
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, image=pc.image_zyx.astype(np.float16), label=pc.label_zyx, present=np.array(pc.present))
    tmp.replace(path)


def load_prepared(path: Path) -> PreparedCase:
    d = np.load(path)
    return PreparedCase(path.stem, d["image"].astype(np.float32), d["label"], tuple(str(x) for x in d["present"]))


def body_points(case: PreparedCase, plan: Plan) -> np.ndarray:
    """Voxels inside the patient (above -500 HU), on a stride-2 lattice; cached on the case.

    Background patches are centred on these so that small patches are not spent on the air around the head.
    Falls back to every voxel for an image without tissue.
    """
    if case.body_points is None:
        thr = float(normalize_hu(np.array([-500.0]), plan)[0])
        pts = np.argwhere(case.image_zyx[::2, ::2, ::2] > thr) * 2
        if not len(pts):
            pts = np.argwhere(np.ones(case.image_zyx.shape[:3], dtype=bool)[::2, ::2, ::2]) * 2
        case.body_points = pts
    return case.body_points


@dataclass
class AugmentConfig:
    p_foreground: float = 0.67  # share of patches centred near a gland; the rest elsewhere
    body_background: bool = True  # centre the rest inside the body (else anywhere in the volume)
    max_rotation_deg: float = 12.0  # about the cranio-caudal axis
    scale_range: tuple[float, float] = (0.9, 1.1)
    p_spatial: float = 0.6
    p_flip: float = 0.5  # left-right flip, swapping the two gland labels
    intensity_scale: tuple[float, float] = (0.9, 1.1)
    intensity_shift: float = 0.08  # in normalised units (x 250 HU with the default plan)
    # fatty-gland simulation: with this probability each gland in the patch is darkened by a random amount in
    # ``fatty_hu`` (HU) inside a softened copy of its mask (fatty, low-density glands are rare in the data)
    p_fatty: float = 0.0
    fatty_hu: tuple[float, float] = (-140.0, -30.0)


def sample_patch(
    case: PreparedCase, plan: Plan, rng: np.random.Generator, aug: AugmentConfig, swap: tuple[int, int] = (1, 2)
) -> tuple[np.ndarray, np.ndarray]:
    """One augmented (image, label) patch of the plan's patch size."""
    patch = np.array(plan.patch_size_zyx)
    shape = np.array(case.image_zyx.shape)
    fg = np.argwhere(case.label_zyx > 0) if rng.random() < aug.p_foreground else None
    if fg is not None and len(fg):
        centre = fg[rng.integers(len(fg))] + rng.uniform(-0.25, 0.25, 3) * patch
    elif aug.body_background:
        pts = body_points(case, plan)
        centre = pts[rng.integers(len(pts))] + rng.uniform(-1.0, 1.0, 3)
    else:
        centre = rng.uniform(0, 1, 3) * (shape - 1)
    matrix = np.eye(3)
    if rng.random() < aug.p_spatial:
        a = math.radians(rng.uniform(-aug.max_rotation_deg, aug.max_rotation_deg))
        s = rng.uniform(*aug.scale_range)
        rot = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
        matrix = rot * s
    pc = (patch - 1) / 2.0
    offset = centre - matrix @ pc
    air = float(normalize_hu(np.array([-1000.0]), plan)[0])
    img = ndimage.affine_transform(
        case.image_zyx, matrix, offset, output_shape=tuple(patch), order=1, mode="constant", cval=air, prefilter=False
    )
    lab = ndimage.affine_transform(
        case.label_zyx, matrix, offset, output_shape=tuple(patch), order=0, mode="constant", cval=0
    )
    if rng.random() < aug.p_flip:
        img = img[:, :, ::-1]
        lab = lab[:, :, ::-1].copy()
        a_, b_ = swap
        lab = np.where(lab == a_, b_, np.where(lab == b_, a_, lab)).astype(np.uint8)
    if aug.p_fatty > 0:
        img = _fatty_glands(img, lab, plan, rng, aug)
    img = img * rng.uniform(*aug.intensity_scale) + rng.uniform(-aug.intensity_shift, aug.intensity_shift)
    return np.ascontiguousarray(img, dtype=np.float32), np.ascontiguousarray(lab)


def _fatty_glands(
    img: np.ndarray, lab: np.ndarray, plan: Plan, rng: np.random.Generator, aug: AugmentConfig
) -> np.ndarray:
    for g in range(1, len(plan.labels)):
        if rng.random() >= aug.p_fatty:
            continue
        mask = lab == g
        if not mask.any():
            continue
        soft = ndimage.gaussian_filter(mask.astype(np.float32), sigma=0.8)
        delta = rng.uniform(*aug.fatty_hu) / plan.hu_scale
        lo, hi = normalize_hu(np.array(plan.hu_clip), plan)
        img = np.clip(img + delta * soft, lo, hi)
    return img


def one_hot(label: np.ndarray, n_classes: int) -> np.ndarray:
    return np.eye(n_classes, dtype=np.float32)[label]
