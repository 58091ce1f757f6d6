"""Evaluation metrics of p_real scores in pure numpy; every value is JSON-safe (never NaN or inf).

Conventions: label 1 = real photograph, 0 = AI-generated ("fake"). At a decision threshold t an
image is *flagged* (predicted fake) when ``p_real < t`` and predicted real otherwise. The band
labels follow ``Thresholds.label``: fake below ``uncertain_low``, real above ``uncertain_high``,
uncertain in between (both ends inclusive).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from aiscan.model.thresholds import Thresholds

CLASSES = ("real", "fake")
BAND_LABELS = ("real", "uncertain", "fake")
MAX_ROC_POINTS = 200


def _validate(p_real: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (p_real as float64, is_real as bool) or raise ValueError on unusable input."""
    p = np.asarray(p_real, dtype=np.float64)
    y = np.asarray(labels)
    if p.ndim != 1 or y.ndim != 1:
        raise ValueError(f"p_real and labels must be 1-D, got shapes {p.shape} and {y.shape}")
    if len(p) != len(y):
        raise ValueError(f"p_real has {len(p)} values but labels has {len(y)}")
    if len(p) == 0:
        raise ValueError("nothing to evaluate: p_real and labels are empty")
    bad = int(np.count_nonzero(~np.isfinite(p)))
    if bad:
        raise ValueError(f"p_real holds {bad} non-finite value(s)")
    if p.min() < 0.0 or p.max() > 1.0:
        raise ValueError(f"p_real must lie in [0, 1], got values in [{p.min()}, {p.max()}]")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (AI-generated) or 1 (real photograph)")
    return p, y == 1


def _ratio(num: float, den: float) -> float | None:
    """num / den as a float, or None when the denominator is zero (the ratio is undefined)."""
    return float(num) / float(den) if den else None


def _f1(precision: float | None, recall: float | None) -> float | None:
    if precision is None or recall is None:
        return None
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def class_scores(is_real: np.ndarray, pred_real: np.ndarray) -> dict[str, dict[str, Any]]:
    """Precision, recall, F1 and support per class, each class taken in turn as the positive one.

    For "fake" the positive prediction is "flagged" (the detector's view); for "real" it is the
    mirror image. Precision is None when no image is predicted as that class; recall (and so F1)
    is None when the class has no images.
    """
    out: dict[str, dict[str, Any]] = {}
    for name, truth, pred in (("real", is_real, pred_real), ("fake", ~is_real, ~pred_real)):
        tp = int(np.count_nonzero(truth & pred))
        precision = _ratio(tp, int(np.count_nonzero(pred)))
        recall = _ratio(tp, int(np.count_nonzero(truth)))
        out[name] = {
            "precision": precision,
            "recall": recall,
            "f1": _f1(precision, recall),
            "support": int(np.count_nonzero(truth)),
        }
    return out


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x``; tied values share the mean of the ranks they span."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    starts = np.r_[True, xs[1:] != xs[:-1]]
    first = np.flatnonzero(starts)
    sizes = np.diff(np.r_[first, len(x)])
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = (first + (sizes + 1) / 2.0)[np.cumsum(starts) - 1]
    return ranks


def roc_auc(p_real: np.ndarray, is_real: np.ndarray) -> float | None:
    """Area under the ROC curve by the Mann-Whitney U statistic (a tie counts one half).

    The same number whichever class is called positive. None unless both classes are present.
    """
    n_real = int(np.count_nonzero(is_real))
    n_fake = len(is_real) - n_real
    if n_real == 0 or n_fake == 0:
        return None
    rank_sum = float(_average_ranks(p_real)[is_real].sum())
    return (rank_sum - n_real * (n_real + 1) / 2.0) / (n_real * n_fake)


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Step-wise average precision, sum over distinct thresholds of (R_k - R_{k-1}) * P_k.

    Matches sklearn's ``average_precision_score`` (no interpolation; tied scores form one step).
    None when there is no positive example.
    """
    n_pos = int(np.count_nonzero(positive))
    if n_pos == 0:
        return None
    order = np.argsort(-scores, kind="mergesort")
    s, pos = scores[order], positive[order]
    last_of_tie = np.r_[s[1:] != s[:-1], True]
    tps = np.cumsum(pos)[last_of_tie]
    fps = np.cumsum(~pos)[last_of_tie]
    precision = tps / (tps + fps)
    recall = tps / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _downsample(n: int, limit: int) -> np.ndarray:
    """At most ``limit`` evenly spread indices of range(n), always keeping the first and last."""
    if n <= limit:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, limit)).astype(np.int64))


def roc_curve(
    p_real: np.ndarray, is_real: np.ndarray, *, max_points: int = MAX_ROC_POINTS
) -> dict[str, list[float]] | None:
    """ROC points with fake as the positive class: at cut t, images with p_real < t are flagged.

    ``fpr`` = share of real photographs flagged, ``tpr`` = share of AI-generated images flagged.
    Cuts are the distinct scores ascending (the first flags nothing) plus one just above the top
    score (flags everything). Evenly thinned to ``max_points``. None unless both classes are present.
    """
    real, fake = np.sort(p_real[is_real]), np.sort(p_real[~is_real])
    if len(real) == 0 or len(fake) == 0:
        return None
    cuts = np.r_[np.unique(p_real), np.nextafter(p_real.max(), np.inf)]
    keep = _downsample(len(cuts), max_points)
    cuts = cuts[keep]
    return {
        "fpr": (np.searchsorted(real, cuts, side="left") / len(real)).tolist(),
        "tpr": (np.searchsorted(fake, cuts, side="left") / len(fake)).tolist(),
        "thresholds": cuts.tolist(),
    }


def _bin_index(p_real: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-width bin of each score: bin i holds i/n <= p < (i+1)/n, and 1.0 joins the last bin."""
    return np.clip(np.floor(p_real * n_bins).astype(np.int64), 0, n_bins - 1)


def calibration(p_real: np.ndarray, is_real: np.ndarray, n_bins: int) -> tuple[float, list[dict[str, Any]]]:
    """Expected calibration error and the reliability-diagram bins behind it.

    ECE = sum over bins of (count / n) * |mean p_real - observed share of real images|. Empty bins
    have count 0 and None for ``mean_predicted`` and ``observed_real``.
    """
    index = _bin_index(p_real, n_bins)
    counts = np.bincount(index, minlength=n_bins)
    sum_p = np.bincount(index, weights=p_real, minlength=n_bins)
    sum_real = np.bincount(index, weights=is_real.astype(np.float64), minlength=n_bins)
    ece = 0.0
    bins = []
    for i in range(n_bins):
        count = int(counts[i])
        mean_p = float(sum_p[i] / count) if count else None
        observed = float(sum_real[i] / count) if count else None
        if mean_p is not None and observed is not None:
            ece += count / len(p_real) * abs(mean_p - observed)
        bins.append(
            {
                "lower": i / n_bins,
                "upper": (i + 1) / n_bins,
                "count": count,
                "mean_predicted": mean_p,
                "observed_real": observed,
            }
        )
    return float(ece), bins


def histograms(p_real: np.ndarray, is_real: np.ndarray, n_bins: int) -> dict[str, list[float] | list[int]]:
    """Counts of p_real per class over ``n_bins`` equal-width bins of [0, 1] (edges has n_bins + 1)."""
    index = _bin_index(p_real, n_bins)
    return {
        "edges": np.linspace(0.0, 1.0, n_bins + 1).tolist(),
        "real": np.bincount(index[is_real], minlength=n_bins).tolist(),
        "fake": np.bincount(index[~is_real], minlength=n_bins).tolist(),
    }


def _band_labels(p_real: np.ndarray, thresholds: Thresholds) -> np.ndarray:
    """Vectorised ``Thresholds.label``."""
    return np.where(
        p_real < thresholds.uncertain_low,
        "fake",
        np.where(p_real > thresholds.uncertain_high, "real", "uncertain"),
    )


def binary_metrics(
    p_real: np.ndarray,
    labels: np.ndarray,
    thresholds: Thresholds,
    *,
    n_bins: int = 10,
    hist_bins: int = 20,
) -> dict[str, Any]:
    """Every evaluation number of p_real scores against labels (1 = real, 0 = AI-generated).

    Raises ValueError for empty or mismatched input, scores outside [0, 1] or NaN, labels other than
    0/1. With one class only the metrics that need both are None: ``roc_auc``, ``roc``, and the
    absent class's ``average_precision`` and recall/F1; ``real_flag_rate*`` is None without real
    images and ``fake_flag_rate`` without fakes. Precision (and F1) of a class that is never
    predicted is None; so are ``mean_predicted``/``observed_real`` of an empty reliability bin.
    """
    if n_bins < 1 or hist_bins < 1:
        raise ValueError(f"bin counts must be >= 1, got n_bins={n_bins} hist_bins={hist_bins}")
    p, is_real = _validate(p_real, labels)
    n_real = int(np.count_nonzero(is_real))
    n_fake = len(p) - n_real
    pred_real = p >= thresholds.decision
    flagged = ~pred_real

    band = _band_labels(p, thresholds)
    label_counts = {
        truth: {lab: int(np.count_nonzero(band[mask] == lab)) for lab in BAND_LABELS}
        for truth, mask in (("real", is_real), ("fake", ~is_real))
    }
    ece, reliability = calibration(p, is_real, n_bins)
    return {
        "n": len(p),
        "counts": {"real": n_real, "fake": n_fake},
        "thresholds": thresholds.to_dict(),
        "accuracy": float(np.mean(pred_real == is_real)),
        "per_class": class_scores(is_real, pred_real),
        "roc_auc": roc_auc(p, is_real),
        "average_precision": {
            # Ranking by -p_real rather than 1 - p_real keeps distinct scores distinct in float.
            "real": average_precision(p, is_real),
            "fake": average_precision(-p, ~is_real),
        },
        "confusion_matrix": {
            "labels": list(CLASSES),
            "rows": "true class",
            "columns": "predicted class at the decision threshold",
            "matrix": [
                [int(np.count_nonzero(is_real & pred_real)), int(np.count_nonzero(is_real & flagged))],
                [int(np.count_nonzero(~is_real & pred_real)), int(np.count_nonzero(~is_real & flagged))],
            ],
        },
        "label_counts": label_counts,
        "real_flag_rate": _ratio(label_counts["real"]["fake"], n_real),
        "real_flag_rate_at_decision": _ratio(int(np.count_nonzero(is_real & flagged)), n_real),
        "fake_flag_rate": _ratio(label_counts["fake"]["fake"], n_fake),
        "ece": ece,
        "reliability": reliability,
        "histogram": histograms(p, is_real, hist_bins),
        "roc": roc_curve(p, is_real),
    }


def choose_thresholds(
    p_real: np.ndarray,
    labels: np.ndarray,
    *,
    max_real_flagged: float = 0.01,
    band: float = 0.1,
) -> Thresholds:
    """Thresholds that flag at most ``max_real_flagged`` of the real photographs in this data.

    Rule: with n real images, k = floor(max_real_flagged * n); the decision threshold t is the
    highest cut with #{real: p_real < t} <= k, i.e. the (k+1)-th smallest real score (1.0 when
    k >= n). t is then lowered to 1 - band/2 if needed so the band [t - band/2, t + band/2] fits
    in [0, 1]. Raising t would flag more reals, so near 0 the band is cut at 0 instead. The
    guarantee therefore holds for both the decision and the "fake" label (p_real < uncertain_low).
    """
    if not 0.0 <= max_real_flagged <= 1.0:
        raise ValueError(f"max_real_flagged must lie in [0, 1], got {max_real_flagged}")
    if not 0.0 <= band <= 1.0:
        raise ValueError(f"band must lie in [0, 1], got {band}")
    p, is_real = _validate(p_real, labels)
    real = np.sort(p[is_real])
    if len(real) == 0:
        raise ValueError("no real images: the share of real photographs flagged is undefined")
    # The tiny slack keeps 0.29 * 100 from flooring to 28 through float rounding.
    allowed = math.floor(max_real_flagged * len(real) * (1 + 1e-12))
    half = band / 2.0
    t = 1.0 if allowed >= len(real) else float(real[allowed])
    t = min(t, 1.0 - half)
    return Thresholds(decision=t, uncertain_low=max(0.0, t - half), uncertain_high=min(1.0, t + half))
