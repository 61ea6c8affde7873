"""The one definition of every evaluation number: labels and probabilities in, numbers out.

`trainer.train.run` (the validation and test figures at the end of a run, and the oversampling phase's
per-family F1) and `trainer.evaluate` (eval/<split>/metrics.json) both call `headline_metrics` and
`per_class_f1`, so one run directory never shows two values of "test macro-F1" for one model; the Keras
streaming MacroF1 that selects checkpoints during training (trainer/objectives.py) is tested equal to
`macro_f1` here. A leaf module (numpy, scikit-learn): the training room may import it without importing the
rest of the evaluation room.

Conventions: `labels` are integer family ids (n,), `probabilities` are (n, classes) rows of a softmax,
`class_names[i]` names family id i and `family_to_phylum` maps family names to phylum names.
Macro-F1 averages over the families that occur as truth or prediction (scikit-learn's default): a family the
model predicts but the split lacks still costs.
"""

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn import metrics as skm

TOP_K = 5
CALIBRATION_BINS = 15
CONFIDENCE_LEVEL = 0.95
BOOTSTRAP_RESAMPLES = 1000
GALLERY_SIZE = 24
CONFUSIONS_LISTED = 50

# Metrics a train-versus-split gap is reported for.
GAP_METRICS = ("accuracy", "macro_f1", "top5_accuracy", "macro_auc")


def macro_f1(labels: np.ndarray, predictions: np.ndarray) -> float:
    """Macro-F1 over the families seen as truth or prediction."""
    return float(skm.f1_score(labels, predictions, average="macro", zero_division=0))


def per_class_f1(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(F1, support) of every class id 0..num_classes-1 (F1 is 0 without support)."""
    _, _, f1, support = skm.precision_recall_fscore_support(labels, predictions, labels=np.arange(num_classes),
                                                           zero_division=0)
    return f1, support


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
        "macro_f1": macro_f1(labels, predictions),
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
        scores["macro_f1"].append(macro_f1(labels[sample], predictions[sample]))
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
