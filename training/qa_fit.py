"""The statistics half of ``training.calibrate_qa`` (numpy/scipy only): AUROC with a patient bootstrap, an L2
logistic regression, nested forward feature selection and leave-one-patient-out predictions.

Hand-written rather than scikit-learn: the models are two small regressions (a few features, ~60 glands), and the
service must not depend on scikit-learn to apply them (it only evaluates a logistic and a linear function).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import optimize


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties count 1/2); NaN without both classes."""
    s, y = np.asarray(scores, dtype=float), np.asarray(positive, dtype=bool)
    pos, neg = s[y], s[~y]
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (pos.size * neg.size))


def bootstrap_auroc_ci(
    scores: np.ndarray, positive: np.ndarray, groups: Sequence[str] | np.ndarray, n_boot: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """95 % percentile interval of the AUROC, resampling *patients* (both glands of a patient stay together)."""
    rng = np.random.default_rng(seed)
    groups_arr = np.asarray(groups)
    uniq = np.unique(groups_arr)
    index = {g: np.flatnonzero(groups_arr == g) for g in uniq}
    vals = []
    for _ in range(n_boot):
        pick = np.concatenate([index[g] for g in rng.choice(uniq, size=uniq.size, replace=True)])
        a = auroc(scores[pick], positive[pick])
        if np.isfinite(a):
            vals.append(a)
    return float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0) -> tuple[np.ndarray, float]:
    """L2-penalised logistic regression (intercept not penalised) on standardised ``x``: ``(coef, intercept)``."""
    n, d = x.shape
    yf = y.astype(float)

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        t = x @ w[:d] + w[d]
        p = 1.0 / (1.0 + np.exp(-t))
        ll = np.sum(np.logaddexp(0.0, t) - yf * t) + 0.5 * l2 * np.sum(w[:d] ** 2)
        g = np.concatenate([x.T @ (p - yf) + l2 * w[:d], [np.sum(p - yf)]])
        return float(ll), g

    res = optimize.minimize(loss, np.zeros(d + 1), jac=True, method="L-BFGS-B")
    return res.x[:d], float(res.x[d])


def fit_ridge(x: np.ndarray, y: np.ndarray, l2: float = 1.0) -> tuple[np.ndarray, float]:
    """Ridge regression (intercept not penalised) on standardised ``x``: ``(coef, intercept)``."""
    ym = float(y.mean())
    d = x.shape[1]
    xc = x - x.mean(axis=0)
    coef = np.linalg.solve(xc.T @ xc + l2 * np.eye(d), xc.T @ (y - ym))
    return coef, ym - float(x.mean(axis=0) @ coef)


def standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    center = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    return center, scale


def _logloss_cv(x: np.ndarray, y: np.ndarray, groups: np.ndarray, l2: float, k: int = 5) -> float:
    """Grouped k-fold log loss (inner criterion of the feature selection)."""
    uniq = np.unique(groups)
    folds = np.array_split(uniq, min(k, uniq.size))
    total = 0.0
    for f in folds:
        test = np.isin(groups, f)
        c, s = standardise(x[~test])
        w, b = fit_logistic((x[~test] - c) / s, y[~test], l2)
        t = ((x[test] - c) / s) @ w + b
        total += float(np.sum(np.logaddexp(0.0, t) - y[test] * t))
    return total


def forward_select(
    x: np.ndarray, y: np.ndarray, groups: np.ndarray, names: Sequence[str], max_features: int, l2: float
) -> list[int]:
    """Greedy forward selection by grouped 5-fold log loss; stops when no feature improves it."""
    chosen: list[int] = []
    best = np.inf
    while len(chosen) < max_features:
        scores = {j: _logloss_cv(x[:, chosen + [j]], y, groups, l2) for j in range(len(names)) if j not in chosen}
        j_best = min(scores, key=lambda j: scores[j])
        if scores[j_best] >= best - 1e-6:
            break
        best = scores[j_best]
        chosen.append(j_best)
    return chosen


def cross_validated_predictions(
    x: np.ndarray,
    y: np.ndarray,
    dice: np.ndarray,
    groups: np.ndarray,
    names: Sequence[str],
    max_features: int,
    l2: float,
    k: int = 5,
    seed: int = 0,
    fixed: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray, list[list[str]]]:
    """Out-of-fold P(poor) and predicted Dice per gland from grouped k-fold cross-validation (patients shuffled with
    ``seed``, both glands of a patient in the same fold; ``k`` >= number of patients = leave-one-patient-out), the
    feature selection redone inside every fold (so the numbers are not flattered by choosing features on the glands
    being scored; ``fixed``: these feature columns in every fold, no selection), and the features each fold used.
    Grouped 5-fold rather than leave-one-out by default: with weak
    signals leave-one-out is biased below 0.5 (each held-out gland shifts the training class balance against it)."""
    p_oof = np.full(len(y), np.nan)
    d_oof = np.full(len(y), np.nan)
    chosen_per_fold: list[list[str]] = []
    uniq = np.unique(groups)
    rng = np.random.default_rng(seed)
    folds = np.array_split(rng.permutation(uniq), min(k, uniq.size))
    for fold in folds:
        test = np.isin(groups, fold)
        sel = (
            list(fixed)
            if fixed is not None
            else forward_select(x[~test], y[~test], groups[~test], names, max_features, l2)
        )
        chosen_per_fold.append([names[j] for j in sel])
        c, s = standardise(x[~test][:, sel])
        xt = (x[~test][:, sel] - c) / s
        w, b = fit_logistic(xt, y[~test], l2)
        wd, bd = fit_ridge(xt, dice[~test], l2)
        xs = (x[test][:, sel] - c) / s
        p_oof[test] = 1.0 / (1.0 + np.exp(-(xs @ w + b)))
        d_oof[test] = np.clip(xs @ wd + bd, 0.0, 1.0)
    return p_oof, d_oof, chosen_per_fold


def operating_point(p: np.ndarray, y: np.ndarray, min_sensitivity: float = 0.8) -> float:
    """The highest threshold on P(poor) whose sensitivity is at least ``min_sensitivity``."""
    pos = np.sort(p[y])[::-1]
    if pos.size == 0:
        return 0.5
    k = int(np.ceil(min_sensitivity * pos.size)) - 1
    return float(pos[k])


def sens_spec(flag: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    flag, y = np.asarray(flag, dtype=bool), np.asarray(y, dtype=bool)
    sens = float(flag[y].mean()) if y.any() else float("nan")
    spec = float((~flag[~y]).mean()) if (~y).any() else float("nan")
    return sens, spec
