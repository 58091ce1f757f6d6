"""Training augmentation: each degradation on its own probability, at native resolution."""

from __future__ import annotations

import numpy as np

from aiscan.training.augment import Augment


def noisy_view(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(128, 30, (75, 75, 3)).clip(0, 255).astype(np.uint8)


def high_frequency(pixels: np.ndarray) -> float:
    g = pixels.astype(np.float32).mean(axis=2)
    return float(np.abs(np.diff(g, axis=0)).mean() + np.abs(np.diff(g, axis=1)).mean())


def test_nothing_happens_at_probability_zero() -> None:
    view = noisy_view()
    out = Augment(blur=0, jpeg=0, flip=0).apply(view, np.random.default_rng(1))
    np.testing.assert_array_equal(out, view)


def test_each_degradation_does_what_it_says() -> None:
    view, rng = noisy_view(), np.random.default_rng(2)
    np.testing.assert_array_equal(Augment(blur=0, jpeg=0, flip=1).apply(view, rng), view[:, ::-1])
    blurred = Augment(blur=1, jpeg=0, flip=0, blur_sigma=(1.0, 3.0)).apply(view, rng)
    assert high_frequency(blurred) < 0.5 * high_frequency(view)
    recompressed = Augment(blur=0, jpeg=1, flip=0, jpeg_quality=(30, 40)).apply(view, rng)
    difference = np.abs(recompressed.astype(int) - view.astype(int)).mean()
    assert 1 < difference < 40 and recompressed.shape == view.shape and recompressed.dtype == np.uint8


def test_probabilities_are_per_degradation() -> None:
    view, rng = noisy_view(), np.random.default_rng(3)
    policy = Augment(blur=0.1, jpeg=0.3, flip=0, blur_sigma=(1.0, 3.0))
    blurred = recompressed = 0
    for _ in range(400):
        out = policy.apply(view, rng)
        if (out != view).any():
            # Blur leaves much less high frequency than JPEG at quality >= 30 on this noise.
            if high_frequency(out) < 0.6 * high_frequency(view):
                blurred += 1
            else:
                recompressed += 1
    assert 20 <= blurred <= 60  # about 40
    # JPEG alone about 0.3 * 0.9 * 400 = 108; blurred views that were also re-compressed count as blurred.
    assert 80 <= recompressed <= 140


def test_policy_is_recorded_as_plain_data() -> None:
    assert Augment().to_dict() == {
        "blur": 0.1,
        "jpeg": 0.1,
        "flip": 0.5,
        "blur_sigma": (0.0, 3.0),
        "jpeg_quality": (30, 100),
    }
