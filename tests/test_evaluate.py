"""Evaluation metrics against hand-computed values and brute force; evaluate + write_report end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aiscan.model.thresholds import Thresholds
from aiscan.training.metrics import (
    average_precision,
    binary_metrics,
    choose_thresholds,
    roc_auc,
)

METRIC_KEYS = {
    "n",
    "counts",
    "thresholds",
    "accuracy",
    "per_class",
    "roc_auc",
    "average_precision",
    "confusion_matrix",
    "label_counts",
    "real_flag_rate",
    "real_flag_rate_at_decision",
    "fake_flag_rate",
    "ece",
    "reliability",
    "histogram",
    "roc",
}
T = Thresholds(decision=0.5, uncertain_low=0.4, uncertain_high=0.6)


def _reject_constant(name: str) -> None:
    raise AssertionError(f"{name} in JSON")


def _json_roundtrip(obj: Any) -> Any:
    """Strict JSON: NaN or inf anywhere raises."""
    return json.loads(json.dumps(obj, allow_nan=False))


# -- hand-computed values ---------------------------------------------------------------------


def test_auc_with_ties_by_hand() -> None:
    # Pairs (real, fake): (.4,.1)=1, (.4,.4)=1/2, (.8,.1)=1, (.8,.4)=1 -> 3.5 / 4.
    p = np.array([0.1, 0.4, 0.4, 0.8])
    y = np.array([0, 0, 1, 1])
    assert roc_auc(p, y == 1) == pytest.approx(0.875)
    assert binary_metrics(p, y, T)["roc_auc"] == pytest.approx(0.875)


def test_auc_matches_pairwise_brute_force() -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        y = rng.integers(0, 2, 40)
        y[:2] = (0, 1)
        p = np.round(rng.random(40), 1)  # heavy ties
        real, fake = p[y == 1], p[y == 0]
        diff = real[:, None] - fake[None, :]
        expected = (np.sum(diff > 0) + 0.5 * np.sum(diff == 0)) / diff.size
        assert roc_auc(p, y == 1) == pytest.approx(expected)


def test_average_precision_by_hand() -> None:
    # real ranked by p desc: .8 (real) P=1 R=1/2; tie at .4 (real, fake) P=2/3 R=1 -> 1/2 + 1/3.
    p = np.array([0.1, 0.4, 0.4, 0.8])
    y = np.array([0, 0, 1, 1])
    ap = binary_metrics(p, y, T)["average_precision"]
    assert ap["real"] == pytest.approx(5 / 6)
    # fake ranked by p asc: .1 (fake) P=1 R=1/2; tie at .4 P=2/3 R=1 -> 5/6 as well.
    assert ap["fake"] == pytest.approx(5 / 6)
    # No ties: positives at ranks 1 and 3 -> 1/2 * 1 + 1/2 * 2/3.
    assert average_precision(np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 0, 1, 0], bool)) == pytest.approx(
        5 / 6
    )
    assert average_precision(np.array([0.9, 0.8]), np.array([0, 1], bool)) == pytest.approx(0.5)


def test_ece_and_reliability_bins_by_hand() -> None:
    # bin 0: mean .05, 0 real -> .05 * 1/4; bin 1: mean .15, 1/2 real -> .35 * 2/4; bin 9: .05 * 1/4.
    p = np.array([0.05, 0.15, 0.15, 0.95])
    y = np.array([0, 1, 0, 1])
    m = binary_metrics(p, y, T, n_bins=10)
    assert m["ece"] == pytest.approx(0.2)
    bins = m["reliability"]
    assert len(bins) == 10 and [b["count"] for b in bins] == [1, 1 + 1, 0, 0, 0, 0, 0, 0, 0, 1]
    assert bins[1]["mean_predicted"] == pytest.approx(0.15) and bins[1]["observed_real"] == 0.5
    assert bins[2]["mean_predicted"] is None and bins[2]["observed_real"] is None
    assert bins[0]["lower"] == 0.0 and bins[9]["upper"] == 1.0
    # A perfectly calibrated set has ECE 0; 1.0 falls in the last bin.
    assert binary_metrics(np.array([0.0, 1.0]), np.array([0, 1]), T)["ece"] == 0.0


def test_confusion_band_counts_f1_by_hand() -> None:
    real = [0.9, 0.95, 0.55, 0.45, 0.2]
    fake = [0.7, 0.3, 0.5, 0.1, 0.05, 0.6]
    p = np.array(real + fake)
    y = np.array([1] * 5 + [0] * 6)
    m = binary_metrics(p, y, T)
    # Predicted real iff p >= .5 (so .5 is real); flagged iff p < .5.
    assert m["confusion_matrix"]["matrix"] == [[3, 2], [3, 3]]
    assert m["confusion_matrix"]["labels"] == ["real", "fake"]
    assert m["accuracy"] == pytest.approx(6 / 11)
    # Band: fake < .4, real > .6, uncertain in [.4, .6] inclusive.
    assert m["label_counts"] == {
        "real": {"real": 2, "uncertain": 2, "fake": 1},
        "fake": {"real": 1, "uncertain": 2, "fake": 3},
    }
    assert m["counts"] == {"real": 5, "fake": 6} and m["n"] == 11
    real_row, fake_row = m["per_class"]["real"], m["per_class"]["fake"]
    assert real_row["precision"] == pytest.approx(3 / 6) and real_row["recall"] == pytest.approx(3 / 5)
    assert real_row["f1"] == pytest.approx(2 * 0.5 * 0.6 / 1.1) and real_row["support"] == 5
    assert fake_row["precision"] == pytest.approx(3 / 5) and fake_row["recall"] == pytest.approx(3 / 6)
    assert fake_row["f1"] == pytest.approx(2 * 0.6 * 0.5 / 1.1) and fake_row["support"] == 6
    assert m["real_flag_rate"] == pytest.approx(1 / 5)  # labelled fake
    assert m["real_flag_rate_at_decision"] == pytest.approx(2 / 5)  # below the decision threshold
    assert m["fake_flag_rate"] == pytest.approx(3 / 6)
    assert sum(m["histogram"]["real"]) == 5 and sum(m["histogram"]["fake"]) == 6
    assert len(m["histogram"]["edges"]) == len(m["histogram"]["real"]) + 1
    assert set(m) == METRIC_KEYS
    assert _json_roundtrip(m) == m


def test_roc_curve_points() -> None:
    p = np.array([0.1, 0.4, 0.4, 0.8])
    y = np.array([0, 0, 1, 1])
    roc = binary_metrics(p, y, T)["roc"]
    # Cuts .1 (nothing flagged), .4 (the .1 fake), .8 (+ the tie at .4), above .8 (everything).
    assert roc["fpr"] == [0.0, 0.0, 0.5, 1.0]
    assert roc["tpr"] == [0.0, 0.5, 1.0, 1.0]
    assert roc["thresholds"][:3] == [0.1, 0.4, 0.8] and roc["thresholds"][3] > 0.8


def test_roc_is_thinned_monotone_and_matches_auc() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 5000)
    p = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1)
    m = binary_metrics(p, y, T)
    fpr, tpr = np.array(m["roc"]["fpr"]), np.array(m["roc"]["tpr"])
    assert len(fpr) <= 200 and (fpr[0], tpr[0]) == (0, 0) and (fpr[-1], tpr[-1]) == (1, 1)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(m["roc_auc"], abs=2e-3)
    small = binary_metrics(p[:150], y[:150], T)  # not thinned: the trapezoid is the AUC exactly
    assert np.trapezoid(small["roc"]["tpr"], small["roc"]["fpr"]) == pytest.approx(small["roc_auc"])


# -- degenerate input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("p", "y", "message"),
    [
        ([], [], "empty"),
        ([0.5, 0.2], [1], "labels has 1"),
        ([0.5, float("nan")], [1, 0], "non-finite"),
        ([0.5, 1.2], [1, 0], r"\[0, 1\]"),
        ([0.5, 0.2], [1, 2], "labels must be 0"),
        ([[0.5]], [[1]], "1-D"),
    ],
)
def test_bad_input_raises(p: list, y: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        binary_metrics(np.array(p), np.array(y), T)


def test_one_class_gives_none_not_nan() -> None:
    m = binary_metrics(np.array([0.9, 0.3, 0.7]), np.array([1, 1, 1]), T)
    assert m["roc_auc"] is None and m["roc"] is None
    assert m["average_precision"]["fake"] is None and m["average_precision"]["real"] == 1.0
    assert m["per_class"]["fake"]["recall"] is None and m["per_class"]["fake"]["f1"] is None
    assert m["per_class"]["fake"]["precision"] == 0.0  # one real flagged, no fake to find
    assert m["fake_flag_rate"] is None and m["real_flag_rate"] == pytest.approx(1 / 3)
    assert _json_roundtrip(m) == m
    fakes = binary_metrics(np.array([0.1, 0.2]), np.array([0, 0]), T)
    assert fakes["real_flag_rate"] is None and fakes["real_flag_rate_at_decision"] is None
    assert fakes["per_class"]["real"]["precision"] is None  # nothing predicted real


def test_class_never_predicted_has_no_precision() -> None:
    m = binary_metrics(np.array([0.9, 0.8, 0.7]), np.array([1, 0, 1]), T)
    assert m["per_class"]["fake"]["precision"] is None and m["per_class"]["fake"]["f1"] is None
    assert m["per_class"]["fake"]["recall"] == 0.0


# -- choose_thresholds ------------------------------------------------------------------------


def _brute_force_cut(p: np.ndarray, y: np.ndarray, target: float) -> float:
    """Highest candidate cut t in [0, 1] with (reals below t) / reals <= target."""
    real = p[y == 1]
    candidates = np.unique(np.r_[p, np.linspace(0, 1, 1001)])
    ok = [t for t in candidates if np.mean(real < t) <= target + 1e-12]
    return float(max(ok))


@pytest.mark.parametrize("seed", range(6))
def test_choose_thresholds_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 400))
    y = rng.integers(0, 2, n)
    y[0] = 1
    p = np.clip(rng.normal(0.3 + 0.4 * y, 0.2), 0, 1)
    if seed % 2:
        p = np.round(p, 2)  # ties at the cut
    for target in (0.0, 0.01, 0.05, 0.2, 0.29, 1.0):
        expected = _brute_force_cut(p, y, target)
        assert choose_thresholds(p, y, max_real_flagged=target, band=0.0).decision == expected
        for band in (0.1, 0.3):
            t = choose_thresholds(p, y, max_real_flagged=target, band=band)
            assert t.decision == pytest.approx(min(expected, 1 - band / 2))
            assert t.uncertain_high - t.decision == pytest.approx(band / 2)
            assert t.decision - t.uncertain_low == pytest.approx(min(band / 2, t.decision))
            # The guarantee on the data it was chosen on, for the decision and the "fake" label.
            real = p[y == 1]
            assert np.mean(real < t.decision) <= target + 1e-12
            assert np.mean(real < t.uncertain_low) <= target + 1e-12
            m = binary_metrics(p, y, t)
            assert m["real_flag_rate_at_decision"] <= target + 1e-12


def test_choose_thresholds_band_stays_inside_unit_interval() -> None:
    y = np.array([1] * 10 + [0] * 10)
    high = np.r_[np.full(10, 0.99), np.full(10, 0.98)]
    t = choose_thresholds(high, y, max_real_flagged=0.0, band=0.2)
    assert (t.uncertain_low, t.decision, t.uncertain_high) == pytest.approx((0.8, 0.9, 1.0))
    low = np.r_[np.linspace(0.01, 0.1, 10), np.zeros(10)]
    t = choose_thresholds(low, y, max_real_flagged=0.0, band=0.2)
    assert t.decision == pytest.approx(0.01) and t.uncertain_low == 0.0  # cut at 0, not raised
    assert t.uncertain_high == pytest.approx(0.11)


def test_choose_thresholds_rejects_bad_arguments() -> None:
    p, y = np.array([0.2, 0.8]), np.array([0, 1])
    with pytest.raises(ValueError, match="max_real_flagged"):
        choose_thresholds(p, y, max_real_flagged=1.5)
    with pytest.raises(ValueError, match="band"):
        choose_thresholds(p, y, band=-0.1)
    with pytest.raises(ValueError, match="no real images"):
        choose_thresholds(p, np.array([0, 0]))


# -- end to end -------------------------------------------------------------------------------

# Metrics that may be None even with both classes present (a class never predicted, empty bins).
_MAY_BE_NONE = {"precision", "f1", "mean_predicted", "observed_real"}


def _assert_finite(obj: Any, key: str = "") -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _assert_finite(v, k)
    elif isinstance(obj, list):
        for v in obj:
            _assert_finite(v, key)
    elif obj is None:
        assert key in _MAY_BE_NONE, f"{key} is None"
    elif isinstance(obj, int | float):
        assert math.isfinite(obj), f"{key} = {obj}"


def test_evaluate_and_write_report(tmp_path: Path) -> None:
    from PIL import Image
    from tinymodels import save_tiny_classifier

    from aiscan.model.importer import import_keras_file
    from aiscan.training.dataset import DatasetError
    from aiscan.training.evaluate import evaluate, write_report
    from aiscan.training.synth import write_labelled_set

    src = tmp_path / "tiny.keras"
    save_tiny_classifier(src, 32, activation="tanh")
    art = import_keras_file(src, tmp_path / "models" / "tiny" / "3", name="tiny", scale="unit")

    data = tmp_path / "data"
    write_labelled_set(data, 12, 12, size=(48, 48))
    (data / "REAL" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 40)

    progress: list[int] = []
    ev = evaluate(art.directory, data, batch_size=8, on_batch=progress.append)  # no test/: falls back
    assert sum(progress) == 25 and len(progress) == 4
    assert ev.skipped == 1 and ev.skipped_paths == [data / "REAL" / "broken.jpg"]
    assert len(ev.p_real) == len(ev.labels) == len(ev.paths) == 24
    assert int(ev.labels.sum()) == 12 and ev.meta.sha256 == art.meta.sha256
    assert np.all((ev.p_real >= 0) & (ev.p_real <= 1))
    m = ev.metrics
    assert set(m) == METRIC_KEYS and m["n"] == 24 and m["counts"] == {"real": 12, "fake": 12}
    assert m["roc_auc"] is not None and m["roc"] is not None
    _assert_finite(m)

    index = write_report(ev, tmp_path / "report")
    assert index == tmp_path / "report" / "index.html"
    saved = json.loads((tmp_path / "report" / "metrics.json").read_text(), parse_constant=_reject_constant)
    assert saved["metrics"] == _json_roundtrip(m)
    assert saved["files"] == {"scored": 24, "skipped": 1}
    assert saved["model"]["version"] == "3" and saved["model"]["sha256"] == art.meta.sha256
    html = index.read_text()
    for name in ("roc.png", "histogram.png", "reliability.png"):
        path = tmp_path / "report" / name
        with Image.open(path) as im:
            assert im.format == "PNG" and im.size[0] > 100
            im.verify()
        assert f'src="{name}"' in html
    assert art.meta.sha256[:12] in html and str(data) in html and "tiny" in html
    assert "Confusion matrix" in html

    junk = tmp_path / "junk"
    for cls in ("REAL", "FAKE"):
        (junk / cls).mkdir(parents=True)
        (junk / cls / "x.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="could be decoded"):
        evaluate(art.directory, junk, batch_size=8)


def test_report_makes_no_pyplot_figures(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    from aiscan.model.metadata import ArtifactMeta
    from aiscan.training.evaluate import Evaluation, write_report

    p = np.array([0.1, 0.4, 0.4, 0.8, 0.95])
    y = np.array([0, 0, 1, 1, 1])
    ev = Evaluation(
        metrics=binary_metrics(p, y, T),
        p_real=p,
        labels=y,
        paths=[tmp_path / f"{i}.png" for i in range(5)],
        skipped=0,
        meta=ArtifactMeta(name="m", input_size=32),
        model_dir=tmp_path,
        data_dir=tmp_path,
    )
    before = plt.get_fignums()
    write_report(ev, tmp_path / "r")
    assert plt.get_fignums() == before
    # An undefined ROC (one class) still renders, and the HTML shows a dash for it.
    ev.metrics = binary_metrics(p, np.ones(5, int), T)
    html = write_report(ev, tmp_path / "one").read_text()
    assert "—" in html and (tmp_path / "one" / "roc.png").stat().st_size > 0
