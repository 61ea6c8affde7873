"""A split's evaluation report on disk and on screen: metrics.json, per_class.csv, confusions.csv, the plots
and the gallery of the most confident mistakes, from labels and probabilities.

Nothing here loads a model or a dataset: `trainer.evaluate` predicts, trainer/numbers/metrics.py computes
every number, trainer/figures/pages.py draws; this module decides what goes in which file.
"""

import dataclasses
import html
import json
import math
import pathlib
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from trainer.figures import pages
from trainer.numbers import metrics

METRICS_JSON = "metrics.json"
PER_CLASS_CSV = "per_class.csv"
CONFUSIONS_CSV = "confusions.csv"
CONFUSION_PNG = "confusion_matrix.png"
RELIABILITY_PNG = "reliability.png"
RISK_COVERAGE_PNG = "risk_coverage.png"
MISTAKES_PNG = "mistakes.png"
MISTAKES_HTML = "mistakes.html"
MISTAKES_DIR = "mistakes"
FEW_SHOT_JSON = "few_shot.json"


@dataclasses.dataclass(frozen=True)
class Mistake:
    """One confidently wrong prediction, as the gallery shows it."""

    file_name: str
    true_name: str
    true_phylum: str
    predicted_name: str
    predicted_phylum: str
    confidence: float
    true_probability: float


def describe_mistakes(indices: np.ndarray, labels: np.ndarray, probabilities: np.ndarray,
                      class_names: Sequence[str], phylum_of: Mapping[str, str],
                      file_names: Sequence[str]) -> list[Mistake]:
    """The gallery's captions for the given example indices."""
    mistakes = []
    for index in indices:
        true, predicted = class_names[labels[index]], class_names[probabilities[index].argmax()]
        mistakes.append(Mistake(file_names[index], true, phylum_of[true], predicted,
                                phylum_of[predicted], float(probabilities[index].max()),
                                float(probabilities[index, labels[index]])))
    return mistakes


def write_mistake_gallery(out_dir: pathlib.Path, mistakes: Sequence[Mistake], images: Sequence[np.ndarray],
                          title: str = "", rank: str = "family") -> None:
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
    _write_mistakes_page(mistakes, files, out_dir / MISTAKES_HTML, title, rank)


def _caption(mistake: Mistake) -> str:
    return (f"true: {mistake.true_name} ({mistake.true_phylum})\n"
            f"predicted: {mistake.predicted_name} ({mistake.predicted_phylum}) {mistake.confidence:.2f}")


def _write_mistakes_page(mistakes: Sequence[Mistake], files: Sequence[str], path: pathlib.Path,
                         title: str, rank: str) -> None:
    cards = "\n".join(
        f'<figure><img src="{html.escape(file)}" alt="{html.escape(m.file_name)}">'
        f"<figcaption><b>{html.escape(m.predicted_name)}</b> ({html.escape(m.predicted_phylum)}) "
        f"{m.confidence:.2f}<br>true: <b>{html.escape(m.true_name)}</b> ({html.escape(m.true_phylum)}) "
        f"{m.true_probability:.2f}<br><small>{html.escape(m.file_name)}</small></figcaption></figure>"
        for m, file in zip(mistakes, files)) or "<p>no mistakes</p>"
    path.write_text(pages.html_page(
        title or "most confident mistakes",
        f"<p>Predicted {rank} (phylum) and its probability; below it the true {rank} and the probability the "
        f"model gave it. Surest mistakes first.</p>\n{cards}"))


@dataclasses.dataclass(frozen=True)
class Report:
    """What write_report wrote, for the caller to print or compare."""

    metrics: dict
    per_class: pd.DataFrame
    confusions: pd.DataFrame


@dataclasses.dataclass(frozen=True)
class Gallery:
    """What the mistake gallery needs: each example's file name, and example indices -> uint8 RGB images."""

    file_names: Sequence[str]
    load_images: Callable[[np.ndarray], Sequence[np.ndarray]]


def write_report(out_dir: pathlib.Path, labels: np.ndarray, probabilities: np.ndarray, space: metrics.LabelSpace,
                 resampling: metrics.Resampling = metrics.Resampling(), *, title: str = "",
                 gallery: Gallery | None = None, extra: Mapping | None = None) -> Report:
    """Writes a split's whole report into out_dir: labels in `space` (its rank titles the tables' columns).

    Files: metrics.json (metrics.evaluation_metrics plus `extra`), per_class.csv, confusions.csv,
    confusion_matrix.png, reliability.png, risk_coverage.png, and with a gallery the most confident mistakes
    (mistakes.png, mistakes.html, mistakes/*.jpg).
    """
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = np.asarray(labels, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    predictions = probabilities.argmax(axis=1)
    numbers = {**metrics.evaluation_metrics(labels, probabilities, space, resampling), **(extra or {})}
    class_names, phylum_of, rank = space.class_names, space.phylum_of, space.rank
    per_class = metrics.per_class_table(labels, predictions, class_names, phylum_of, rank)
    per_class.to_csv(out_dir / PER_CLASS_CSV, index=False)
    confusion = metrics.confusion_counts(labels, predictions, probabilities.shape[1])
    confusions = metrics.top_confusions(confusion, class_names, phylum_of)
    confusions.to_csv(out_dir / CONFUSIONS_CSV, index=False)
    pages.plot_confusion_matrix(confusion, class_names, phylum_of, out_dir / CONFUSION_PNG, title, rank)
    pages.plot_reliability_diagram(metrics.reliability_bins(labels, probabilities),
                                   numbers["expected_calibration_error"], out_dir / RELIABILITY_PNG, title)
    pages.plot_risk_coverage(pd.DataFrame(numbers["risk_coverage"]), numbers["aurc"], out_dir / RISK_COVERAGE_PNG,
                             title)
    if gallery is not None:
        indices = metrics.confident_mistakes(labels, probabilities)
        write_mistake_gallery(out_dir, describe_mistakes(indices, labels, probabilities, class_names,
                                                         phylum_of, gallery.file_names),
                              gallery.load_images(indices), title, rank)
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


def write_few_shot(out_dir: pathlib.Path, results: Mapping) -> None:
    """few_shot.json of a backbone judged without a run (a run's go into its metrics.json)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_json(out_dir / FEW_SHOT_JSON, results)


def few_shot_lines(results: Mapping) -> list[str]:
    """One line per shot count: mean and spread over the folds, against chance."""
    return [f"  {key.replace('_', '-'):7s} accuracy {value['mean']:.3f} ± {value['std']:.3f} over "
            f"{results['folds']} folds ({value['labels']} species of {results['images']} images of "
            f"{results['split']}; chance {value['chance']:.3f})"
            for key, value in results.items() if key.endswith("_shot")]


def tree_lines(numbers: Mapping) -> list[str]:
    """The summary's lines on the tree: mistake severity, the ranks above the label, each head, the consistent
    answer and the roll-up (each when metrics.json has it)."""
    lines = []
    if "mistake_severity" in numbers:
        severity = numbers["mistake_severity"]
        lines.append("  mistake severity " + ("none (no mistakes)" if math.isnan(severity) else
                                              f"{severity:.2f} (floor {numbers['mistake_severity_floor']:.2f})")
                     + f" of {numbers['lca_root_height']}   hierarchical distance " + ", ".join(
                         f"@{k} {numbers[f'hierarchical_distance_at_{k}']:.2f}" for k in metrics.HIERARCHICAL_K))
    for key, words in (("ranks", "up the tree"), ("heads", "of each head"),
                       ("consistent", "consistent with the tree")):
        if numbers.get(key):
            lines.append(f"  accuracy/macro-F1 {words}: " + ", ".join(
                f"{name} {values['accuracy']:.3f}/{values['macro_f1']:.3f}" for name, values in numbers[key].items()))
    if "rollup" in numbers:
        rolled = numbers["rollup"]
        lines.append(f"  roll-up at {rolled['target_precision']:.0%} precision: coverage {rolled['coverage']:.3f}, "
                     f"precision {rolled['precision']:.3f}; answered at " + ", ".join(
                         f"{rank} {share:.0%}" for rank, share in rolled["answered_at"].items())
                     + "; temperature " + ", ".join(
                         f"{head} {value:.2f}" for head, value in numbers["calibration"]["temperatures"].items()))
    return lines


def format_summary(report: Report, heading: str = "") -> str:
    """The one screen a person reads after an evaluation; the files hold the rest."""
    numbers = report.metrics
    rank = numbers["label_rank"]

    def interval(name: str) -> str:
        low, high = numbers[f"{name}_ci95"]
        return f"  [{low:.3f}, {high:.3f}] 95% CI"

    lines = [heading or "evaluation",
             f"  {numbers['examples']} images, {numbers['labels_present']} {rank} labels",
             f"  accuracy        {numbers['accuracy']:.3f}{interval('accuracy')}",
             f"  macro-F1        {numbers['macro_f1']:.3f}{interval('macro_f1')}",
             f"  top-5 accuracy  {numbers['top5_accuracy']:.3f}",
             f"  macro AUC       {numbers['macro_auc']:.3f}",
             f"  phylum accuracy {numbers['phylum_accuracy']:.3f}   " + (
                 f"errors within the right phylum: {numbers['errors_within_phylum_share']:.0%} "
                 f"of {numbers['errors']}" if numbers["errors"] else f"no {rank} errors"),
             f"  ECE ({numbers['calibration_bins']} bins) {numbers['expected_calibration_error']:.3f}   "
             f"AURC {numbers['aurc']:.3f}"]
    lines += tree_lines(numbers)
    if "few_shot" in numbers:
        lines += few_shot_lines(numbers["few_shot"])
    if "gap" in numbers:
        lines.append("  train gap       " + ", ".join(
            f"{name} {value:+.3f}" for name, value in numbers["gap"].items()))
    if len(report.per_class):
        lines.append(f"  worst {rank} labels  " + ", ".join(
            f"{row[rank]} (F1 {row.f1:.2f}, n={row.support})" for _, row in report.per_class.head(5).iterrows()))
    if len(report.confusions):
        lines.append("  top confusions  " + ", ".join(
            f"{row.true} -> {row.predicted} ({row.count}, {row.share_of_true:.0%})"
            for row in report.confusions.head(5).itertuples()))
    return "\n".join(lines)

