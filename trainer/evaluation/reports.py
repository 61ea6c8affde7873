"""A split's evaluation report on disk and on screen: metrics.json, per_class.csv, confusions.csv, the plots
and the gallery of the most confident mistakes, from labels and probabilities.

Nothing here loads a model or a dataset: `trainer.evaluate` predicts, trainer/evaluation/metrics.py computes
every number, trainer/evaluation/pages.py draws; this module decides what goes in which file.
"""

import dataclasses
import html
import json
import math
import pathlib
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from trainer.evaluation import metrics, pages

METRICS_JSON = "metrics.json"
PER_CLASS_CSV = "per_class.csv"
CONFUSIONS_CSV = "confusions.csv"
CONFUSION_PNG = "confusion_matrix.png"
RELIABILITY_PNG = "reliability.png"
MISTAKES_PNG = "mistakes.png"
MISTAKES_HTML = "mistakes.html"
MISTAKES_DIR = "mistakes"


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
    thumbnails = [pages.thumbnail(image) for image in images]
    (out_dir / MISTAKES_DIR).mkdir(parents=True, exist_ok=True)
    files = []
    for rank, thumbnail in enumerate(thumbnails, 1):
        files.append(f"{MISTAKES_DIR}/{rank:03d}.jpg")
        thumbnail.save(out_dir / files[-1], quality=90)
    pages.contact_sheet(
        thumbnails, [_caption(mistake) for mistake in mistakes],
        ["tab:orange" if m.true_phylum == m.predicted_phylum else "tab:red" for m in mistakes],
        out_dir / MISTAKES_PNG, f"{title or 'most confident mistakes'}: surest mistakes first\n"
        "orange: right phylum, red: wrong phylum", empty="no mistakes")
    _write_mistakes_page(mistakes, files, out_dir / MISTAKES_HTML, title)


def _caption(mistake: Mistake) -> str:
    return (f"true: {mistake.true_family} ({mistake.true_phylum})\n"
            f"predicted: {mistake.predicted_family} ({mistake.predicted_phylum}) {mistake.confidence:.2f}")


def _write_mistakes_page(mistakes: Sequence[Mistake], files: Sequence[str], path: pathlib.Path,
                         title: str) -> None:
    cards = "\n".join(
        f'<figure><img src="{html.escape(file)}" alt="{html.escape(m.file_name)}">'
        f"<figcaption><b>{html.escape(m.predicted_family)}</b> ({html.escape(m.predicted_phylum)}) "
        f"{m.confidence:.2f}<br>true: <b>{html.escape(m.true_family)}</b> ({html.escape(m.true_phylum)}) "
        f"{m.true_probability:.2f}<br><small>{html.escape(m.file_name)}</small></figcaption></figure>"
        for m, file in zip(mistakes, files)) or "<p>no mistakes</p>"
    path.write_text(pages.html_page(
        title or "most confident mistakes",
        "<p>Predicted family (phylum) and its probability; below it the true family and the probability the "
        f"model gave it. Surest mistakes first.</p>\n{cards}"))


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
                 extra: Mapping | None = None, resamples: int = metrics.BOOTSTRAP_RESAMPLES, seed: int = 0) -> Report:
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
    numbers = {**metrics.evaluation_metrics(labels, probabilities, class_names, family_to_phylum, resamples, seed),
               **(extra or {})}
    per_class = metrics.per_class_table(labels, predictions, class_names, family_to_phylum)
    per_class.to_csv(out_dir / PER_CLASS_CSV, index=False)
    confusion = metrics.confusion_counts(labels, predictions, probabilities.shape[1])
    confusions = metrics.top_confusions(confusion, class_names, family_to_phylum)
    confusions.to_csv(out_dir / CONFUSIONS_CSV, index=False)
    pages.plot_confusion_matrix(confusion, class_names, family_to_phylum, out_dir / CONFUSION_PNG, title)
    pages.plot_reliability_diagram(metrics.reliability_bins(labels, probabilities),
                                   numbers["expected_calibration_error"], out_dir / RELIABILITY_PNG, title)
    if file_names is not None and load_images is not None:
        indices = metrics.confident_mistakes(labels, probabilities)
        write_mistake_gallery(out_dir, describe_mistakes(indices, labels, probabilities, class_names,
                                                         family_to_phylum, file_names),
                              load_images(indices), title)
    _write_json(out_dir / METRICS_JSON, numbers)
    return Report(numbers, per_class, confusions)


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
    numbers = report.metrics

    def interval(name: str) -> str:
        low, high = numbers[f"{name}_ci95"]
        return f"  [{low:.3f}, {high:.3f}] 95% CI"

    lines = [heading or "evaluation",
             f"  {numbers['examples']} images, {numbers['families_present']} families",
             f"  accuracy        {numbers['accuracy']:.3f}{interval('accuracy')}",
             f"  macro-F1        {numbers['macro_f1']:.3f}{interval('macro_f1')}",
             f"  top-5 accuracy  {numbers['top5_accuracy']:.3f}",
             f"  macro AUC       {numbers['macro_auc']:.3f}",
             f"  phylum accuracy {numbers['phylum_accuracy']:.3f}   " + (
                 f"errors within the right phylum: {numbers['errors_within_phylum_share']:.0%} "
                 f"of {numbers['errors']}" if numbers["errors"] else "no family errors"),
             f"  ECE ({numbers['calibration_bins']} bins) {numbers['expected_calibration_error']:.3f}"]
    if "gap" in numbers:
        lines.append("  train gap       " + ", ".join(
            f"{name} {value:+.3f}" for name, value in numbers["gap"].items()))
    if len(report.per_class):
        lines.append("  worst families  " + ", ".join(
            f"{row.family} (F1 {row.f1:.2f}, n={row.support})" for row in report.per_class.head(5).itertuples()))
    if len(report.confusions):
        lines.append("  top confusions  " + ", ".join(
            f"{row.true} -> {row.predicted} ({row.count}, {row.share_of_true:.0%})"
            for row in report.confusions.head(5).itertuples()))
    return "\n".join(lines)

