"""Evaluate a model artifact on labelled folders; write metrics.json and an HTML report with plots."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from aiscan.model.batching import read_ahead, read_window, score_batches
from aiscan.model.classifier import ImageClassifier, load_classifier
from aiscan.model.errors import DecodeError
from aiscan.model.metadata import ArtifactMeta
from aiscan.training.dataset import DatasetError, find_labelled
from aiscan.training.metrics import binary_metrics
from aiscan.training.robustness import CONDITIONS, Condition, condition_metrics

# Threads reading files ahead of decoding; the jobs' AISCAN_FETCH_CONCURRENCY default.
READ_THREADS = 8
PLOTS = {"roc": "roc.png", "histogram": "histogram.png", "reliability": "reliability.png"}


@dataclass
class Evaluation:
    """Scores of one model on one labelled data set; ``paths``, ``p_real`` and ``labels`` align."""

    metrics: dict[str, Any]
    p_real: np.ndarray
    labels: np.ndarray
    paths: list[Path]
    skipped: int
    meta: ArtifactMeta
    model_dir: Path
    data_dir: Path
    skipped_paths: list[Path] = field(default_factory=list)
    # Per condition name, what ``evaluate_robustness`` measured; None until it runs.
    robustness: dict[str, dict[str, Any]] | None = None


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _views(
    classifier: ImageClassifier, edit: Callable[[bytes], bytes] | None, item: tuple[int, bytes | None]
) -> np.ndarray | None:
    """The views its model scores of one read file, edited first if asked; None if unreadable."""
    _index, data = item
    if data is None:
        return None
    try:
        return classifier.decode(data if edit is None else edit(data)).views
    except DecodeError:
        return None


def score_files(
    classifier: ImageClassifier,
    paths: Sequence[Path],
    on_batch: Callable[[int], None] | None,
    edit: Callable[[bytes], bytes] | None = None,
) -> tuple[dict[int, float], list[int]]:
    """p_real of each of ``paths`` by index, and the indices that could not be read or decoded.

    Reads run ahead and decoding (with ``edit``, which runs in the decode threads) takes turns with
    the model as in a job's chunk, so only a few batches of files are in memory at once.
    """

    def read(index: int) -> tuple[int, bytes | None]:
        return index, _read(paths[index])

    scores: dict[int, float] = {}
    skipped: list[int] = []
    read_files = read_ahead(read, range(len(paths)), workers=READ_THREADS, window=read_window(classifier))
    for (index, _data), views in score_batches(
        read_files, partial(_views, classifier, edit), classifier, on_progress=on_batch or (lambda _n: None)
    ):
        if views is None:
            skipped.append(index)
        else:
            scores[index] = classifier.aggregate(views)[0]
    return scores, skipped


def evaluate(
    model_dir: Path,
    data_dir: Path,
    *,
    batch_size: int = 32,
    split: str | None = "test",
    on_batch: Callable[[int], None] | None = None,
    runtime: str = "auto",
) -> Evaluation:
    """Score ``data_dir``'s labelled files (its ``split`` folder when present) with the artifact.

    Files that cannot be decoded are skipped and counted. ``on_batch(n)`` is called as files are handled
    (a scored batch, or one skipped file) with their number; the calls sum to the number of files.
    ``runtime`` is AISCAN_RUNTIME's choice (model.runtimes).
    """
    model_dir, data_dir = Path(model_dir), Path(data_dir)
    # The chunk pipeline's scheduling: decoding takes turns with a CPU model and runs ahead of a GPU.
    classifier = load_classifier(model_dir, batch_size=batch_size, make_thumbnails=False, runtime=runtime)
    meta = classifier.runner.meta
    assert meta is not None  # load_classifier reads it from the artifact
    files = find_labelled(data_dir, split=split)
    scores, skipped = score_files(classifier, files.paths, on_batch)
    if not scores:
        raise DatasetError(f"none of the {len(files)} labelled files under {data_dir} could be decoded")

    kept = sorted(scores)
    p_real = np.array([scores[i] for i in kept], dtype=np.float64)
    labels = files.labels[kept]
    return Evaluation(
        metrics=binary_metrics(p_real, labels, meta.thresholds),
        p_real=p_real,
        labels=labels,
        paths=[files.paths[i] for i in kept],
        skipped=len(skipped),
        meta=meta,
        model_dir=model_dir,
        data_dir=data_dir,
        skipped_paths=[files.paths[i] for i in sorted(skipped)],
    )


def evaluate_robustness(
    evaluation: Evaluation,
    conditions: Sequence[Condition] = CONDITIONS,
    *,
    batch_size: int = 32,
    on_condition: Callable[[Condition], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
    runtime: str = "auto",
) -> dict[str, dict[str, Any]]:
    """Re-score the evaluation's scored files under each condition; set and return ``evaluation.robustness``.

    Each condition edits every file's bytes, then the file goes through the same classifier path as the
    clean run. ``on_condition`` is called as each condition starts; ``on_batch`` as in ``evaluate``, so the
    calls sum to ``len(evaluation.paths) * len(conditions)``.
    """
    classifier = load_classifier(
        evaluation.model_dir, batch_size=batch_size, make_thumbnails=False, runtime=runtime
    )
    results: dict[str, dict[str, Any]] = {}
    for condition in conditions:
        if on_condition is not None:
            on_condition(condition)
        scores, skipped = score_files(
            classifier,
            evaluation.paths,
            on_batch,
            partial(condition.apply, max_bytes=classifier.max_bytes, max_pixels=classifier.max_pixels),
        )
        kept = sorted(scores)
        edited = np.array([scores[i] for i in kept], dtype=np.float64)
        results[condition.name] = {
            "description": condition.description,
            "files": {"scored": len(kept), "skipped": len(skipped)},
            **condition_metrics(
                evaluation.p_real[kept], edited, evaluation.labels[kept], evaluation.meta.thresholds
            ),
        }
    evaluation.robustness = results
    return results


def _model_version(evaluation: Evaluation) -> str | None:
    """The registry version: metadata's ``version`` if any, else the NAME/VERSION folder's name."""
    version = evaluation.meta.extra.get("version")
    if version is not None:
        return str(version)
    directory = evaluation.model_dir.resolve()
    if directory.name.isdigit() and directory.parent.name == evaluation.meta.name:
        return directory.name
    return None


def _report_data(evaluation: Evaluation) -> dict[str, Any]:
    """What metrics.json holds: the metrics plus enough context to tell runs apart."""
    meta = evaluation.meta
    root = Path(os.path.commonpath(evaluation.paths)) if evaluation.paths else evaluation.data_dir
    data: dict[str, Any] = {
        "model": {
            "name": meta.name,
            "version": _model_version(evaluation),
            "sha256": meta.sha256,
            "input_size": meta.input_size,
            "directory": str(evaluation.model_dir),
        },
        "data_dir": str(evaluation.data_dir),
        "evaluated_dir": str(root),
        "files": {"scored": len(evaluation.paths), "skipped": evaluation.skipped},
        "skipped_files": [str(p) for p in evaluation.skipped_paths],
        "metrics": evaluation.metrics,
    }
    if evaluation.robustness is not None:
        data["robustness"] = evaluation.robustness
    return data


def _new_figure(width: float = 6.0, height: float = 4.5) -> Any:
    """A Figure on its own Agg canvas: never registered with pyplot, so nothing global to leak."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> None:
    try:
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        fig.clear()


def _plot_roc(metrics: dict[str, Any], path: Path) -> None:
    fig = _new_figure(5.5, 5.0)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    roc = metrics["roc"]
    if roc is None:
        ax.text(0.5, 0.5, "ROC undefined: one class only", ha="center", va="center")
    else:
        auc = f"AUC = {metrics['roc_auc']:.3f}"
        ax.plot(roc["fpr"], roc["tpr"], color="C0", linewidth=2, label=f"ROC ({auc})")
        fpr, tpr = metrics["real_flag_rate_at_decision"], metrics["per_class"]["fake"]["recall"]
        ax.plot([fpr], [tpr], "o", color="C3", label=f"decision {metrics['thresholds']['decision']:.3f}")
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1.01),
        xlabel="real photographs flagged (FPR)",
        ylabel="AI-generated images flagged (TPR)",
        title="ROC",
    )
    ax.legend(loc="lower right")
    _save(fig, path)


def _plot_histogram(metrics: dict[str, Any], path: Path) -> None:
    fig = _new_figure(7.0, 4.5)
    ax = fig.add_subplot()
    hist, thresholds = metrics["histogram"], metrics["thresholds"]
    ax.axvspan(
        thresholds["uncertain_low"],
        thresholds["uncertain_high"],
        color="grey",
        alpha=0.2,
        label="uncertain band",
    )
    for name, colour in (("real", "C0"), ("fake", "C3")):
        ax.stairs(
            hist[name],
            hist["edges"],
            fill=True,
            alpha=0.45,
            color=colour,
            label=f"{name} (n={metrics['counts'][name]})",
        )
    decision = thresholds["decision"]
    ax.axvline(decision, color="black", linestyle="--", label=f"decision {decision:.3f}")
    ax.set(xlim=(0, 1), xlabel="p_real", ylabel="images", title="p_real by true class")
    ax.legend(loc="best")
    _save(fig, path)


def _plot_reliability(metrics: dict[str, Any], path: Path) -> None:
    fig = _new_figure(5.5, 5.0)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect calibration")
    bins = [b for b in metrics["reliability"] if b["count"]]
    ax.bar(
        [(b["lower"] + b["upper"]) / 2 for b in bins],
        [b["observed_real"] for b in bins],
        width=bins[0]["upper"] - bins[0]["lower"] if bins else 0.1,
        alpha=0.3,
        color="C0",
        edgecolor="C0",
        label="observed share real",
    )
    ax.plot(
        [b["mean_predicted"] for b in bins],
        [b["observed_real"] for b in bins],
        "o-",
        color="C0",
        label="mean p_real per bin",
    )
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1),
        xlabel="predicted p_real",
        ylabel="observed share of real images",
        title=f"Reliability (ECE = {metrics['ece']:.3f})",
    )
    ax.legend(loc="upper left")
    _save(fig, path)


def _fmt(value: Any, digits: int = 4) -> str:
    """Numbers for the HTML table: None (undefined) as a dash."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _signed(value: float | None, digits: int = 4) -> str:
    """A change for the HTML table, with its sign; None (undefined) as a dash."""
    return "—" if value is None else f"{value:+.{digits}f}"


_TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>aiscan evaluation: {{ model.name }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1100px; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: right; }
th { background: #f3f3f3; } td.name, th.name { text-align: left; }
code { background: #f3f3f3; padding: 0 0.2em; }
img { max-width: 100%; margin: 0.5em 1em 0.5em 0; border: 1px solid #eee; }
</style>
</head>
<body>
<h1>Evaluation of {{ model.name }}{% if model.version %} v{{ model.version }}{% endif %}</h1>
<table>
<tr><th class="name">model</th><td class="name">{{ model.name }}{% if model.version %}
  (version {{ model.version }}){% endif %}, sha256 <code title="{{ model.sha256 }}">{{
  model.sha256[:12] or "—" }}</code>, input {{ model.input_size }} px</td></tr>
<tr><th class="name">model directory</th><td class="name"><code>{{ model.directory }}</code></td></tr>
<tr><th class="name">data</th><td class="name"><code>{{ data_dir }}</code>{% if evaluated_dir != data_dir %}
  (evaluated <code>{{ evaluated_dir }}</code>){% endif %}</td></tr>
<tr><th class="name">images</th><td class="name">{{ m.n }} scored ({{ m.counts.real }} real,
  {{ m.counts.fake }} AI-generated), {{ files.skipped }} skipped (could not be decoded)</td></tr>
<tr><th class="name">thresholds</th><td class="name">decision {{ m.thresholds.decision | fmt(3) }},
  uncertain band {{ m.thresholds.uncertain_low | fmt(3) }} –
  {{ m.thresholds.uncertain_high | fmt(3) }}</td></tr>
</table>

<h2>Metrics</h2>
<table>
<tr><th class="name">accuracy (at decision)</th><td>{{ m.accuracy | fmt }}</td></tr>
<tr><th class="name">ROC AUC</th><td>{{ m.roc_auc | fmt }}</td></tr>
<tr><th class="name">average precision, fake</th><td>{{ m.average_precision.fake | fmt }}</td></tr>
<tr><th class="name">average precision, real</th><td>{{ m.average_precision.real | fmt }}</td></tr>
<tr><th class="name">expected calibration error</th><td>{{ m.ece | fmt }}</td></tr>
<tr><th class="name">real photographs labelled fake</th><td>{{ m.real_flag_rate | fmt }}</td></tr>
<tr><th class="name">real photographs below decision</th>
  <td>{{ m.real_flag_rate_at_decision | fmt }}</td></tr>
<tr><th class="name">AI-generated images labelled fake</th><td>{{ m.fake_flag_rate | fmt }}</td></tr>
</table>
<table>
<tr><th class="name">class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>
{% for name, row in m.per_class.items() %}
<tr><td class="name">{{ name }}</td><td>{{ row.precision | fmt }}</td><td>{{ row.recall | fmt }}</td>
<td>{{ row.f1 | fmt }}</td><td>{{ row.support }}</td></tr>
{% endfor %}
</table>

<h2>Confusion matrix (at decision {{ m.thresholds.decision | fmt(3) }})</h2>
<table>
<tr><th class="name">true \\ predicted</th>
  {% for c in m.confusion_matrix.labels %}<th>{{ c }}</th>{% endfor %}</tr>
{% for row in m.confusion_matrix.matrix %}
<tr><th class="name">{{ m.confusion_matrix.labels[loop.index0] }}</th>
  {% for v in row %}<td>{{ v }}</td>{% endfor %}</tr>
{% endfor %}
</table>

<h2>Labels with the uncertain band</h2>
<table>
<tr><th class="name">true \\ label</th><th>real</th><th>uncertain</th><th>fake</th></tr>
{% for truth, row in m.label_counts.items() %}
<tr><th class="name">{{ truth }}</th>
  <td>{{ row.real }}</td><td>{{ row.uncertain }}</td><td>{{ row.fake }}</td></tr>
{% endfor %}
</table>

{% if robustness %}
<h2>Robustness: the same images after everyday edits</h2>
<p>Real photographs are re-compressed, resized and converted on their way into an archive. Each row
re-scores the same {{ m.n }} images after one such edit, with the same model and thresholds. For an
audit, the column to read is <b>real photographs labelled fake</b>: the share of genuine photographs
this model would accuse of being AI-generated once recompressed, resized or converted. Where it rises
well above the clean row, a <code>fake</code> label on such photographs is not evidence. Changes are
against the same images scored unedited.</p>
<table>
<tr><th class="name">condition</th><th class="name">edit</th><th>images</th><th>ROC AUC</th>
  <th>change</th><th>accuracy</th><th>change</th><th>real photographs labelled fake</th><th>change</th></tr>
<tr><td class="name">clean</td><td class="name">the files as they are</td><td>{{ m.n }}</td>
  <td>{{ m.roc_auc | fmt }}</td><td></td><td>{{ m.accuracy | fmt }}</td><td></td>
  <td>{{ m.real_flag_rate | fmt }}</td><td></td></tr>
{% for name, row in robustness.items() %}
<tr><td class="name">{{ name }}</td><td class="name">{{ row.description }}</td>
  <td>{{ row.files.scored }}{% if row.files.skipped %} ({{ row.files.skipped }} skipped){% endif %}</td>
  <td>{{ row.roc_auc | fmt }}</td><td>{{ row.delta.roc_auc | signed }}</td>
  <td>{{ row.accuracy | fmt }}</td><td>{{ row.delta.accuracy | signed }}</td>
  <td>{{ row.real_flag_rate | fmt }}</td><td>{{ row.delta.real_flag_rate | signed }}</td></tr>
{% endfor %}
</table>
{% endif %}

<h2>Plots</h2>
<img src="{{ plots.histogram }}" alt="p_real histograms per class">
<img src="{{ plots.roc }}" alt="ROC curve">
<img src="{{ plots.reliability }}" alt="reliability diagram">
<p>Numbers: <a href="metrics.json">metrics.json</a></p>
</body>
</html>
"""


def _render_html(data: dict[str, Any]) -> str:
    env = jinja2.Environment(
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True
    )
    env.filters["fmt"] = _fmt
    env.filters["signed"] = _signed
    return env.from_string(_TEMPLATE).render(
        robustness=data.get("robustness"),
        model=data["model"],
        data_dir=data["data_dir"],
        evaluated_dir=data["evaluated_dir"],
        files=data["files"],
        m=data["metrics"],
        plots=PLOTS,
    )


def write_report(evaluation: Evaluation, out_dir: Path) -> Path:
    """Write metrics.json, roc.png, histogram.png, reliability.png and index.html; return index.html."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = _report_data(evaluation)
    (out_dir / "metrics.json").write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
    metrics = evaluation.metrics
    _plot_roc(metrics, out_dir / PLOTS["roc"])
    _plot_histogram(metrics, out_dir / PLOTS["histogram"])
    _plot_reliability(metrics, out_dir / PLOTS["reliability"])
    index = out_dir / "index.html"
    index.write_text(_render_html(data), encoding="utf-8")
    return index
