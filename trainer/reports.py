"""Evaluation numbers, tables, plots and pages from arrays: labels and probabilities in, numbers and files out.

Nothing here loads a model or a dataset, so the evaluate app, the trainer's end-of-run evaluation and
`make demo` share one implementation, and tests check it against scikit-learn on crafted arrays.
Conventions: `labels` are integer family ids (n,), `probabilities` are (n, classes) rows of a softmax,
`class_names[i]` names family id i and `family_to_phylum` maps family names to phylum names.
"""

import dataclasses
import html
import json
import math
import pathlib
from typing import Callable, Mapping, Sequence

import matplotlib.colors
import matplotlib.figure
import matplotlib.ticker
import numpy as np
import pandas as pd
from PIL import Image
from sklearn import metrics as skm

TOP_K = 5
CALIBRATION_BINS = 15
CONFIDENCE_LEVEL = 0.95
BOOTSTRAP_RESAMPLES = 1000
GALLERY_SIZE = 24
THUMBNAIL_SIDE = 160
CONFUSIONS_LISTED = 50
ANNOTATED_UP_TO = 30  # families up to which the confusion matrix prints counts in its cells

METRICS_JSON = "metrics.json"
PER_CLASS_CSV = "per_class.csv"
CONFUSIONS_CSV = "confusions.csv"
CONFUSION_PNG = "confusion_matrix.png"
RELIABILITY_PNG = "reliability.png"
MISTAKES_PNG = "mistakes.png"
MISTAKES_HTML = "mistakes.html"
MISTAKES_DIR = "mistakes"

# Metrics a train-versus-split gap is reported for.
GAP_METRICS = ("accuracy", "macro_f1", "top5_accuracy", "macro_auc")


def headline_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """Accuracy, macro-F1, top-5 accuracy and macro one-vs-rest AUC over the families present in `labels`.

    Macro-F1 averages over the families that occur as truth or prediction (scikit-learn's default), so a
    family the model predicts but the split lacks still costs. AUC needs positives and negatives, so it
    averages over the families present in the split only (NaN when fewer than two are).
    """
    predictions = probabilities.argmax(axis=1)
    present = np.unique(labels)
    auc = (skm.roc_auc_score((labels[:, None] == present).astype(int), probabilities[:, present], average="macro")
           if len(present) > 1 else math.nan)
    return {
        "accuracy": float(skm.accuracy_score(labels, predictions)),
        "macro_f1": float(skm.f1_score(labels, predictions, average="macro", zero_division=0)),
        "top5_accuracy": float(skm.top_k_accuracy_score(labels, probabilities, k=TOP_K,
                                                        labels=np.arange(probabilities.shape[1]))),
        "macro_auc": float(auc),
    }


def bootstrap_intervals(labels: np.ndarray, predictions: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES,
                        seed: int = 0, level: float = CONFIDENCE_LEVEL) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of accuracy and macro-F1: how much the numbers owe to which images
    happened to land in the split. Resamples the examples with replacement, seeded, so reruns agree."""
    rng = np.random.default_rng(seed)
    scores = {"accuracy": [], "macro_f1": []}
    for _ in range(resamples):
        sample = rng.integers(0, len(labels), len(labels))
        scores["accuracy"].append(skm.accuracy_score(labels[sample], predictions[sample]))
        scores["macro_f1"].append(skm.f1_score(labels[sample], predictions[sample], average="macro",
                                               zero_division=0))
    tail = 100 * (1 - level) / 2
    return {name: tuple(float(v) for v in np.percentile(values, [tail, 100 - tail]))
            for name, values in scores.items()}


def per_class_table(labels: np.ndarray, predictions: np.ndarray, class_names: Sequence[str],
                    family_to_phylum: Mapping[str, str]) -> pd.DataFrame:
    """Precision, recall, F1 and support of every family seen as truth or prediction, worst F1 first."""
    present = np.union1d(labels, predictions)
    precision, recall, f1, support = skm.precision_recall_fscore_support(labels, predictions, labels=present,
                                                                          zero_division=0)
    names = [class_names[i] for i in present]
    table = pd.DataFrame({"family": names, "phylum": [family_to_phylum[n] for n in names],
                          "precision": precision, "recall": recall, "f1": f1, "support": support})
    return table.sort_values(["f1", "support", "family"], ascending=[True, False, True], ignore_index=True)


def confusion_counts(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) counts, rows = true family id, columns = predicted family id."""
    return skm.confusion_matrix(labels, predictions, labels=np.arange(num_classes))


def top_confusions(confusion: np.ndarray, class_names: Sequence[str], family_to_phylum: Mapping[str, str],
                   limit: int = CONFUSIONS_LISTED) -> pd.DataFrame:
    """The most frequent (true, predicted) mistakes, with the share of the true family's images they take."""
    mistakes = confusion * (1 - np.eye(len(confusion), dtype=confusion.dtype))
    true, predicted = np.nonzero(mistakes)
    names = np.asarray(class_names, dtype=object)
    phyla = np.array([family_to_phylum[n] for n in class_names], dtype=object)
    table = pd.DataFrame({"true": names[true], "predicted": names[predicted],
                          "count": mistakes[true, predicted],
                          "share_of_true": mistakes[true, predicted] / confusion.sum(axis=1)[true],
                          "same_phylum": phyla[true] == phyla[predicted]})
    return table.sort_values(["count", "share_of_true", "true"], ascending=[False, False, True],
                             ignore_index=True).head(limit)


def taxonomy_metrics(labels: np.ndarray, predictions: np.ndarray, class_names: Sequence[str],
                     family_to_phylum: Mapping[str, str]) -> dict:
    """Phylum accuracy implied by the family predictions, and the share of family errors that at least
    land in the right phylum: a model that confuses two corals is less wrong than one that calls a coral a bat."""
    phyla = np.array([family_to_phylum[n] for n in class_names], dtype=object)
    true_phyla, predicted_phyla = phyla[labels], phyla[predictions]
    wrong = labels != predictions
    per_phylum = {}
    for phylum in sorted(set(true_phyla)):
        members = true_phyla == phylum
        per_phylum[str(phylum)] = {"examples": int(members.sum()),
                                   "family_accuracy": float(np.mean(~wrong[members])),
                                   "phylum_accuracy": float(np.mean(predicted_phyla[members] == phylum))}
    return {
        "phylum_accuracy": float(skm.accuracy_score(true_phyla, predicted_phyla)),
        "errors": int(wrong.sum()),
        "errors_within_phylum_share": (float(np.mean(true_phyla[wrong] == predicted_phyla[wrong]))
                                       if wrong.any() else math.nan),
        "per_phylum": per_phylum,
    }


def reliability_bins(labels: np.ndarray, probabilities: np.ndarray, bins: int = CALIBRATION_BINS) -> pd.DataFrame:
    """Top-label confidence against accuracy in equal-width confidence bins (lower, upper]."""
    confidence = probabilities.max(axis=1)
    correct = (probabilities.argmax(axis=1) == labels).astype(float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.digitize(confidence, edges[1:-1], right=True)
    count = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return pd.DataFrame({"lower": edges[:-1], "upper": edges[1:], "count": count,
                             "confidence": np.bincount(index, confidence, bins) / count,
                             "accuracy": np.bincount(index, correct, bins) / count})


def expected_calibration_error(labels: np.ndarray, probabilities: np.ndarray,
                               bins: int = CALIBRATION_BINS) -> float:
    """ECE: the count-weighted mean gap between confidence and accuracy over the reliability bins."""
    table = reliability_bins(labels, probabilities, bins)
    filled = table[table["count"] > 0]
    return float(np.sum(filled["count"] * (filled["confidence"] - filled["accuracy"]).abs()) / len(labels))


def confident_mistakes(labels: np.ndarray, probabilities: np.ndarray, limit: int = GALLERY_SIZE) -> np.ndarray:
    """Indices of the wrong predictions the model was surest of, surest first."""
    predictions = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predictions != labels)
    return wrong[np.argsort(-probabilities[wrong, predictions[wrong]], kind="stable")][:limit]


def train_gap(train: Mapping[str, float], evaluated: Mapping[str, float]) -> dict[str, float]:
    """Train minus evaluated split for the headline metrics: large positive values mean overfitting."""
    return {name: train[name] - evaluated[name] for name in GAP_METRICS}


def _taxonomic_order(class_names: Sequence[str], family_to_phylum: Mapping[str, str],
                     ids: Sequence[int]) -> list[int]:
    """Family ids sorted by phylum, then family name, so each phylum is one block of a matrix."""
    return sorted(ids, key=lambda i: (family_to_phylum[class_names[i]], class_names[i]))


def plot_confusion_matrix(confusion: np.ndarray, class_names: Sequence[str], family_to_phylum: Mapping[str, str],
                          path: pathlib.Path, title: str = "") -> None:
    """Counts of the families seen as truth or prediction, grouped by phylum, on a log colour scale.

    Readable at 202 families: the log scale keeps single mistakes visible next to diagonals of dozens,
    empty cells stay white, phylum blocks are outlined and named on the top and right edges, and the
    family tick labels shrink with the number of families. Small matrices also print each count.
    """
    seen = np.flatnonzero(confusion.sum(axis=0) + confusion.sum(axis=1))
    order = _taxonomic_order(class_names, family_to_phylum, seen)
    counts = confusion[np.ix_(order, order)]
    names = [class_names[i] for i in order]
    phyla = [family_to_phylum[n] for n in names]
    size = len(order)
    side = min(24.0, max(6.0, 0.1 * size + 3))
    font = min(9.0, 0.6 * 0.8 * side * 72 / max(size, 1))
    figure = matplotlib.figure.Figure(figsize=(side + 1.5, side + 1), dpi=150, layout="constrained")
    axes = figure.add_subplot()
    colours = matplotlib.colors.ListedColormap(matplotlib.colormaps["viridis"](np.linspace(0, 0.85, 256)))
    norm = matplotlib.colors.LogNorm(vmin=1, vmax=max(2, counts.max()))
    image = axes.imshow(np.ma.masked_equal(counts, 0), cmap=colours.with_extremes(bad="white"), norm=norm,
                        interpolation="nearest")
    if size <= ANNOTATED_UP_TO:
        for row, column in zip(*np.nonzero(counts)):
            axes.text(column, row, str(counts[row, column]), ha="center", va="center", fontsize=font,
                      color="white" if norm(counts[row, column]) < 0.6 else "black")
    scale = figure.colorbar(image, ax=axes, shrink=0.6, label="images (log scale; white = none)")
    scale.ax.yaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:.0f}"))
    scale.ax.yaxis.set_minor_formatter(matplotlib.ticker.LogFormatter(labelOnlyBase=False))
    axes.set_xticks(range(size), names, rotation=90, fontsize=font)
    axes.set_yticks(range(size), names, fontsize=font)
    axes.set_xlabel("predicted family")
    axes.set_ylabel("true family")
    starts = [i for i in range(size) if i == 0 or phyla[i] != phyla[i - 1]]
    centres = [(start + end - 1) / 2 for start, end in zip(starts, [*starts[1:], size])]
    for start in starts[1:]:
        axes.axhline(start - 0.5, color="black", linewidth=0.8)
        axes.axvline(start - 0.5, color="black", linewidth=0.8)
    top, right = axes.secondary_xaxis("top"), axes.secondary_yaxis("right")
    top.set_xticks(centres, [phyla[i] for i in starts], rotation=90, fontsize=8, fontweight="bold")
    right.set_yticks(centres, [phyla[i] for i in starts], fontsize=8, fontweight="bold")
    axes.set_title(title or "confusion matrix")
    figure.savefig(path)


def plot_reliability_diagram(bins: pd.DataFrame, ece: float, path: pathlib.Path, title: str = "") -> None:
    """Accuracy per confidence bin against its mean confidence and the diagonal (hatched above the blue:
    over-confident), with how many images each bin holds underneath."""
    figure = matplotlib.figure.Figure(figsize=(6, 7), dpi=120, layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    width = bins["upper"] - bins["lower"]
    filled = bins["count"] > 0
    top.bar(bins["lower"][filled], bins["accuracy"][filled], width=width[filled], align="edge",
            edgecolor="black", label="accuracy")
    top.bar(bins["lower"][filled], bins["confidence"][filled], width=width[filled], align="edge", fill=False,
            edgecolor="tab:red", hatch="//", label="mean confidence")
    top.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    top.set_ylabel("accuracy")
    top.set_ylim(0, 1)
    top.legend(loc="upper left")
    top.set_title(f"{title or 'reliability'}: ECE {ece:.3f} ({len(bins)} bins)")
    bottom.bar(bins["lower"], bins["count"], width=width, align="edge", color="grey", edgecolor="black")
    bottom.set_xlim(0, 1)
    bottom.set_xlabel("confidence (top-1 probability)")
    bottom.set_ylabel("images")
    figure.savefig(path)


@dataclasses.dataclass(frozen=True)
class Mistake:
    """One confidently wrong prediction, as the gallery shows it."""

    file_name: str
    true_family: str
    true_phylum: str
    predicted_family: str
    predicted_phylum: str
    confidence: float
    true_probability: float


def describe_mistakes(indices: np.ndarray, labels: np.ndarray, probabilities: np.ndarray,
                      class_names: Sequence[str], family_to_phylum: Mapping[str, str],
                      file_names: Sequence[str]) -> list[Mistake]:
    """The gallery's captions for the given example indices."""
    mistakes = []
    for index in indices:
        true, predicted = class_names[labels[index]], class_names[probabilities[index].argmax()]
        mistakes.append(Mistake(file_names[index], true, family_to_phylum[true], predicted,
                                family_to_phylum[predicted], float(probabilities[index].max()),
                                float(probabilities[index, labels[index]])))
    return mistakes


def write_mistake_gallery(out_dir: pathlib.Path, mistakes: Sequence[Mistake], images: Sequence[np.ndarray],
                          title: str = "") -> None:
    """mistakes.png (a contact sheet) and mistakes.html (a static page over thumbnails in mistakes/)."""
    thumbnails = [_thumbnail(image) for image in images]
    (out_dir / MISTAKES_DIR).mkdir(parents=True, exist_ok=True)
    files = []
    for rank, thumbnail in enumerate(thumbnails, 1):
        files.append(f"{MISTAKES_DIR}/{rank:03d}.jpg")
        thumbnail.save(out_dir / files[-1], quality=90)
    _plot_contact_sheet(mistakes, thumbnails, out_dir / MISTAKES_PNG, title)
    _write_mistakes_page(mistakes, files, out_dir / MISTAKES_HTML, title)


def _thumbnail(image: np.ndarray) -> Image.Image:
    thumbnail = Image.fromarray(np.asarray(image, dtype=np.uint8))
    thumbnail.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    return thumbnail


def _caption(mistake: Mistake) -> str:
    return (f"true: {mistake.true_family} ({mistake.true_phylum})\n"
            f"predicted: {mistake.predicted_family} ({mistake.predicted_phylum}) {mistake.confidence:.2f}")


def _plot_contact_sheet(mistakes: Sequence[Mistake], thumbnails: Sequence[Image.Image], path: pathlib.Path,
                        title: str) -> None:
    columns = min(6, max(1, len(thumbnails)))
    rows = max(1, math.ceil(len(thumbnails) / columns))
    figure = matplotlib.figure.Figure(figsize=(max(8, 3 * columns), 3.2 * rows + 0.4), dpi=100,
                                      layout="constrained")
    grid = np.atleast_1d(figure.subplots(rows, columns, squeeze=False).ravel())
    for axes in grid:
        axes.axis("off")
    for axes, mistake, thumbnail in zip(grid, mistakes, thumbnails):
        axes.imshow(thumbnail)
        colour = "tab:orange" if mistake.true_phylum == mistake.predicted_phylum else "tab:red"
        axes.set_title(_caption(mistake), fontsize=8, color=colour)
    if not thumbnails:
        grid[0].text(0.5, 0.5, "no mistakes", ha="center", va="center", fontsize=14)
    figure.suptitle(f"{title or 'most confident mistakes'}: surest mistakes first\n"
                    "orange: right phylum, red: wrong phylum")
    figure.savefig(path)


def _write_mistakes_page(mistakes: Sequence[Mistake], files: Sequence[str], path: pathlib.Path,
                         title: str) -> None:
    heading = html.escape(title or "most confident mistakes")
    cards = "\n".join(
        f'<figure><img src="{html.escape(file)}" alt="{html.escape(m.file_name)}">'
        f"<figcaption><b>{html.escape(m.predicted_family)}</b> ({html.escape(m.predicted_phylum)}) "
        f"{m.confidence:.2f}<br>true: <b>{html.escape(m.true_family)}</b> ({html.escape(m.true_phylum)}) "
        f"{m.true_probability:.2f}<br><small>{html.escape(m.file_name)}</small></figcaption></figure>"
        for m, file in zip(mistakes, files)) or "<p>no mistakes</p>"
    path.write_text(
        f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{heading}</title><style>"
        "body{font-family:sans-serif;margin:1em} figure{display:inline-block;width:200px;margin:6px;"
        "vertical-align:top} img{width:200px;height:auto} figcaption{font-size:12px}</style></head>\n"
        f"<body><h1>{heading}</h1><p>Predicted family (phylum) and its probability; below it the true family "
        f"and the probability the model gave it. Surest mistakes first.</p>\n{cards}\n</body></html>\n")


def evaluation_metrics(labels: np.ndarray, probabilities: np.ndarray, class_names: Sequence[str],
                       family_to_phylum: Mapping[str, str], resamples: int = BOOTSTRAP_RESAMPLES,
                       seed: int = 0) -> dict:
    """Every number of metrics.json for one split (see write_report)."""
    predictions = probabilities.argmax(axis=1)
    intervals = bootstrap_intervals(labels, predictions, resamples, seed)
    return {
        "examples": int(len(labels)),
        "families_present": int(len(np.unique(labels))),
        **headline_metrics(labels, probabilities),
        "accuracy_ci95": list(intervals["accuracy"]),
        "macro_f1_ci95": list(intervals["macro_f1"]),
        "bootstrap": {"resamples": resamples, "seed": seed, "level": CONFIDENCE_LEVEL},
        **taxonomy_metrics(labels, predictions, class_names, family_to_phylum),
        "expected_calibration_error": expected_calibration_error(labels, probabilities),
        "calibration_bins": CALIBRATION_BINS,
    }


@dataclasses.dataclass(frozen=True)
class Report:
    """What write_report wrote, for the caller to print or compare."""

    metrics: dict
    per_class: pd.DataFrame
    confusions: pd.DataFrame


def write_report(out_dir: pathlib.Path, labels: np.ndarray, probabilities: np.ndarray,
                 class_names: Sequence[str], family_to_phylum: Mapping[str, str], *, title: str = "",
                 file_names: Sequence[str] | None = None,
                 load_images: Callable[[np.ndarray], Sequence[np.ndarray]] | None = None,
                 extra: Mapping | None = None, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> Report:
    """Writes a split's whole report into out_dir.

    Files: metrics.json (numbers plus `extra`), per_class.csv, confusions.csv, confusion_matrix.png,
    reliability.png, and, when `file_names` and `load_images` (example indices -> uint8 RGB images) are given,
    the mistake gallery (mistakes.png, mistakes.html, mistakes/*.jpg).
    """
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = np.asarray(labels, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    predictions = probabilities.argmax(axis=1)
    metrics = {**evaluation_metrics(labels, probabilities, class_names, family_to_phylum, resamples, seed),
               **(extra or {})}
    per_class = per_class_table(labels, predictions, class_names, family_to_phylum)
    per_class.to_csv(out_dir / PER_CLASS_CSV, index=False)
    confusion = confusion_counts(labels, predictions, probabilities.shape[1])
    confusions = top_confusions(confusion, class_names, family_to_phylum)
    confusions.to_csv(out_dir / CONFUSIONS_CSV, index=False)
    plot_confusion_matrix(confusion, class_names, family_to_phylum, out_dir / CONFUSION_PNG, title)
    plot_reliability_diagram(reliability_bins(labels, probabilities), metrics["expected_calibration_error"],
                             out_dir / RELIABILITY_PNG, title)
    if file_names is not None and load_images is not None:
        indices = confident_mistakes(labels, probabilities)
        write_mistake_gallery(out_dir, describe_mistakes(indices, labels, probabilities, class_names,
                                                         family_to_phylum, file_names),
                              load_images(indices), title)
    _write_json(out_dir / METRICS_JSON, metrics)
    return Report(metrics, per_class, confusions)


def _write_json(path: pathlib.Path, data: Mapping) -> None:
    """JSON with NaN written as null, so strict readers (browsers, jq) accept it."""
    pathlib.Path(path).write_text(json.dumps(_nan_to_none(data), indent=2) + "\n")


def _nan_to_none(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Mapping):
        return {key: _nan_to_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(item) for item in value]
    return value


def format_summary(report: Report, heading: str = "") -> str:
    """The one screen a person reads after an evaluation; the files hold the rest."""
    metrics = report.metrics

    def interval(name: str) -> str:
        low, high = metrics[f"{name}_ci95"]
        return f"  [{low:.3f}, {high:.3f}] 95% CI"

    lines = [heading or "evaluation",
             f"  {metrics['examples']} images, {metrics['families_present']} families",
             f"  accuracy        {metrics['accuracy']:.3f}{interval('accuracy')}",
             f"  macro-F1        {metrics['macro_f1']:.3f}{interval('macro_f1')}",
             f"  top-5 accuracy  {metrics['top5_accuracy']:.3f}",
             f"  macro AUC       {metrics['macro_auc']:.3f}",
             f"  phylum accuracy {metrics['phylum_accuracy']:.3f}   " + (
                 f"errors within the right phylum: {metrics['errors_within_phylum_share']:.0%} "
                 f"of {metrics['errors']}" if metrics["errors"] else "no family errors"),
             f"  ECE ({metrics['calibration_bins']} bins) {metrics['expected_calibration_error']:.3f}"]
    if "gap" in metrics:
        lines.append("  train gap       " + ", ".join(
            f"{name} {value:+.3f}" for name, value in metrics["gap"].items()))
    if len(report.per_class):
        lines.append("  worst families  " + ", ".join(
            f"{row.family} (F1 {row.f1:.2f}, n={row.support})" for row in report.per_class.head(5).itertuples()))
    if len(report.confusions):
        lines.append("  top confusions  " + ", ".join(
            f"{row.true} -> {row.predicted} ({row.count}, {row.share_of_true:.0%})"
            for row in report.confusions.head(5).itertuples()))
    return "\n".join(lines)
