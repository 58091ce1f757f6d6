"""Which rule should turn an image's tile scores into its p_real? Measured, not assumed.

``python -m bench.aggregation`` trains a small tiled detector from scratch on trace-only synthetic data
(the classes differ only in high-frequency traces), then scores held-out real images, generated images
and real images with a generated patch over a quarter of their area (an AI edit), and compares the
rules side by side: ROC AUC against each kind, and what each labels at the decision threshold 0.5.
It prints a table and writes JSON; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from aiscan.model.metadata import PreprocessSpec
from aiscan.model.runner import Runner
from aiscan.model.views import make_views
from aiscan.training.metrics import roc_auc
from aiscan.training.synth import trace_only_fake, trace_only_real, write_labelled_set
from aiscan.training.train import TrainConfig, train
from bench.report import progress


def _most_fake_mean(fraction: float) -> Callable[[np.ndarray], float]:
    def rule(scores: np.ndarray) -> float:
        k = max(1, math.ceil(len(scores) * fraction))
        return float(np.sort(scores)[:k].mean())

    return rule


# Candidates: the registered rules (mean, fake-quartile, min) and the half-way point between them.
RULES: dict[str, Callable[[np.ndarray], float]] = {
    "mean": lambda s: float(np.mean(s)),
    "fake-half": _most_fake_mean(0.5),
    "fake-quartile": _most_fake_mean(0.25),
    "min": lambda s: float(np.min(s)),
}


def held_out(n: int, size: int, seed: int) -> list[tuple[str, np.ndarray]]:
    """``n`` real, ``n`` generated and ``n`` partly generated images (a quarter of the area), as pixels."""
    images: list[tuple[str, np.ndarray]] = []
    for i in range(n):
        rng = np.random.default_rng([seed, 7, i])
        real = np.asarray(trace_only_real(rng, size, size))
        fake = np.asarray(trace_only_fake(rng, size, size))
        partial = real.copy()
        half = size // 2
        y, x = (int(v) for v in rng.integers(0, size - half, size=2, endpoint=True))
        partial[y : y + half, x : x + half] = fake[y : y + half, x : x + half]
        images += [
            ("real", real),
            ("fake", np.asarray(trace_only_fake(rng, size, size))),
            ("partial", partial),
        ]
    return images


def measure(args: argparse.Namespace) -> dict[str, Any]:
    spec = PreprocessSpec("tiles", max_tiles=args.max_tiles)
    with tempfile.TemporaryDirectory(prefix="aiscan-aggregation-") as tmp:
        data = Path(tmp) / "data"
        progress(f"writing {2 * args.train_images} trace-only training images of {args.size} px")
        write_labelled_set(
            data,
            args.train_images,
            args.train_images,
            size=(args.size, args.size),
            seed=args.seed,
            style="traces",
        )
        progress(f"training a tiled detector from scratch at {args.input_size} px for {args.epochs} epochs")
        config = TrainConfig(
            input_size=args.input_size, epochs=args.epochs, base_weights=None, preprocess=spec, seed=args.seed
        )
        result = train(data, config)
    runner = Runner(result.model, args.input_size, 32)
    progress(f"scoring {3 * args.test_images} held-out images, up to {args.max_tiles} tiles each")
    kinds, scores = [], []
    for kind, pixels in held_out(args.test_images, args.size, args.seed + 1):
        kinds.append(kind)
        scores.append(runner.predict(make_views(pixels, spec, args.input_size).pixels))
    return {"config": vars(args), "rules": compare(kinds, scores)}


def compare(kinds: Sequence[str], scores: Sequence[np.ndarray]) -> dict[str, dict[str, float | None]]:
    """Per rule: ROC AUC of real against generated and against partly generated images, accuracy on real
    and generated at 0.5, and the shares of partly generated and of real images labelled fake there."""
    kind = np.asarray(kinds)
    out: dict[str, dict[str, float | None]] = {}
    for name, rule in RULES.items():
        p = np.array([rule(s) for s in scores])
        real, fake, partial = p[kind == "real"], p[kind == "fake"], p[kind == "partial"]
        out[name] = {
            "auc_fake": _auc(real, fake),
            "auc_partial": _auc(real, partial),
            "accuracy": float(np.mean(np.r_[real > 0.5, fake <= 0.5])),
            "partial_flagged": float(np.mean(partial <= 0.5)),
            "real_flagged": float(np.mean(real <= 0.5)),
        }
    return out


def _auc(real: np.ndarray, other: np.ndarray) -> float | None:
    """ROC AUC of p_real separating ``real`` images from ``other`` ones."""
    is_real = np.r_[np.ones(len(real)), np.zeros(len(other))].astype(bool)
    return roc_auc(np.concatenate([real, other]), is_real)


def print_table(results: dict[str, Any], console: Console) -> None:
    table = Table(title="tile aggregation rules (held-out trace-only images)")
    columns = ("auc_fake", "auc_partial", "accuracy", "partial_flagged", "real_flagged")
    for col in ("rule", *columns):
        table.add_column(col, justify="left" if col == "rule" else "right")
    for name, row in results["rules"].items():
        table.add_row(name, *("n/a" if row[c] is None else f"{row[c]:.3f}" for c in columns))
    console.print(table)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.aggregation", description=__doc__.split("\n")[0])
    parser.add_argument("--train-images", type=int, default=300, help="per class")
    parser.add_argument("--test-images", type=int, default=60, help="per kind: real, generated, partial")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--input-size", type=int, default=75)
    parser.add_argument("--max-tiles", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("aggregation-results.json"))
    args = parser.parse_args(argv)
    results = measure(args)
    print_table(results, Console())
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
