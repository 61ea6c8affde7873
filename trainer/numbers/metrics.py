"""The one definition of every evaluation number: labels and probabilities in, numbers out.

`trainer.training.train.run` (the validation and test figures at the end of a run, and the oversampling phase's
per-family F1) and `trainer.evaluate` (eval/<split>/metrics.json) both call `headline_metrics` and
`per_class_f1`, so one run directory never shows two values of "test macro-F1" for one model; the Keras
streaming MacroF1 that selects checkpoints during training (trainer/training/objectives.py) is tested equal to
`macro_f1` here. A leaf module (numpy, scipy, scikit-learn): the training room may import it without importing
the rest of the evaluation room.

Conventions: `labels` are integer label ids (n,) at the model's label rank (`rank`, family by default; any of
the six), `probabilities` are (n, classes) rows of a softmax, `class_names[i]` names label id i and
`phylum_of` maps each label name to its phylum name (tfds_rarespecies.labels.phylum_of). Macro-F1 averages
over the labels that occur as truth or prediction (scikit-learn's default): a label the model predicts but the
split lacks still costs.
"""

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats
from sklearn import metrics as skm

# The ranks a dict of ancestors lists, phylum first (tfds_rarespecies.labels.RANKS, which this leaf cannot import
# without TensorFlow: the builder's package registers its dataset on import; a test keeps the two equal).
RANKS = ("phylum", "class", "order", "family", "genus", "species")


TOP_K = 5
CALIBRATION_BINS = 15
CONFIDENCE_LEVEL = 0.95
BOOTSTRAP_RESAMPLES = 1000
JACKKNIFE_GROUPS = 200
HIERARCHICAL_K = (1, 5)
RISK_COVERAGE_POINTS = 100
GALLERY_SIZE = 24
CONFUSIONS_LISTED = 50

# Metrics a train-versus-split gap is reported for.
GAP_METRICS = ("accuracy", "macro_f1", "top5_accuracy", "macro_auc")


def macro_f1(labels: np.ndarray, predictions: np.ndarray) -> float:
    """Macro-F1 over the labels seen as truth or prediction."""
    return float(skm.f1_score(labels, predictions, average="macro", zero_division=0))


def per_class_f1(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(F1, support) of every class id 0..num_classes-1 (F1 is 0 without support)."""
    _, _, f1, support = skm.precision_recall_fscore_support(labels, predictions, labels=np.arange(num_classes),
                                                           zero_division=0)
    return f1, support


def headline_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """Accuracy, macro-F1, top-5 accuracy and macro one-vs-rest AUC over the labels present in `labels`.

    Macro-F1 averages over the labels that occur as truth or prediction (scikit-learn's default), so a
    label the model predicts but the split lacks still costs. AUC needs positives and negatives, so it
    averages over the labels present in the split only (NaN when fewer than two are). With at most five labels
    (a small collection) every label is in the top five: top-5 accuracy is 1.0, without scikit-learn's warning
    that it says nothing.
    """
    predictions = probabilities.argmax(axis=1)
    present = np.unique(labels)
    auc = (skm.roc_auc_score((labels[:, None] == present).astype(int), probabilities[:, present], average="macro")
           if len(present) > 1 else math.nan)
    return {
        "accuracy": float(skm.accuracy_score(labels, predictions)),
        "macro_f1": macro_f1(labels, predictions),
        "top5_accuracy": 1.0 if probabilities.shape[1] <= TOP_K else float(skm.top_k_accuracy_score(
            labels, probabilities, k=TOP_K, labels=np.arange(probabilities.shape[1]))),
        "macro_auc": float(auc),
    }


def bootstrap_intervals(labels: np.ndarray, predictions: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES,
                        seed: int = 0, level: float = CONFIDENCE_LEVEL,
                        strata: np.ndarray | None = None) -> dict[str, tuple[float, float]]:
    """BCa bootstrap intervals of accuracy and macro-F1 under a resampling within strata (default: the labels,
    i.e. within family, as the test split is drawn): how much the numbers owe to which images of each family
    happened to land in the split. Seeded, so reruns agree.

    Each resample keeps every image's true label and gives it the outcome of a donor drawn from its stratum:
    right (its own label) or the label the donor was wrongly given (`stratified_donors`). Within a family that
    is ordinary resampling of the family's images, and every family keeps its support, so macro-F1 is not pulled
    down by families that vanish from a resample while still being predicted (what put the plain bootstrap's
    0.443 at the top of [0.350, 0.451] on a split of one test image per family).

    Not scipy.stats.bootstrap(method="BCa"): it resamples each of its samples whole, so strata could only be
    separate samples, and it refuses a sample of fewer than two observations, which every family of that split
    is; nor can it pool those or hand a donor's outcome to another image. So the resampling is here, and the
    BCa arithmetic (bca_interval) over its replicates.
    """
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    donors = stratified_donors(labels if strata is None else np.asarray(strata), resamples,
                               np.random.default_rng(seed))
    correct = labels == predictions
    intervals = {}
    for name, statistic in (("accuracy", skm.accuracy_score), ("macro_f1", macro_f1)):
        replicates = [statistic(labels, np.where(correct[row], labels, predictions[row])) for row in donors]
        jackknife = [statistic(np.delete(labels, group), np.delete(predictions, group))
                     for group in jackknife_groups(len(labels))]
        intervals[name] = bca_interval(float(statistic(labels, predictions)), np.asarray(replicates),
                                       np.asarray(jackknife), level)
    return intervals


def stratified_donors(strata: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(resamples, n) donor indices: for each resample and each example, an example drawn with replacement
    from the same stratum. Strata of one example cannot vary on their own (their resample would always be
    the example itself, an interval claiming a certainty one image cannot give), so all such examples form
    one pooled stratum; with every stratum a singleton that is the plain bootstrap of the outcomes."""
    strata = np.asarray(strata)
    _, inverse, counts = np.unique(strata, return_inverse=True, return_counts=True)
    groups = np.where(counts[inverse] > 1, inverse, -1)
    donors = np.empty((resamples, len(strata)), dtype=np.int64)
    for group in np.unique(groups):
        members = np.flatnonzero(groups == group)
        donors[:, members] = members[rng.integers(0, len(members), (resamples, len(members)))]
    return donors


def jackknife_groups(examples: int, groups: int = JACKKNIFE_GROUPS) -> list[np.ndarray]:
    """Leave-one-out index sets, or, above `groups` examples, `groups` interleaved leave-a-group-out sets: the
    acceleration is a small correction and the grouped jackknife estimates it as well at a fraction of the
    statistic evaluations (Efron & Tibshirani 1993, 11.5)."""
    count = min(examples, groups)
    return [np.arange(start, examples, count) for start in range(count)]


def bca_interval(point: float, replicates: np.ndarray, jackknife: np.ndarray,
                 level: float = CONFIDENCE_LEVEL) -> tuple[float, float]:
    """The bias-corrected and accelerated percentile interval (Efron & Tibshirani 1993, 14.3).

    Bias correction z0 from the share of replicates below the point estimate (ties count half, clipped so a
    replicate set wholly on one side stays finite); acceleration from the jackknife values' skewness.
    """
    below = (np.sum(replicates < point) + 0.5 * np.sum(replicates == point)) / len(replicates)
    z0 = stats.norm.ppf(np.clip(below, 0.5 / len(replicates), 1 - 0.5 / len(replicates)))
    spread = jackknife.mean() - jackknife
    denominator = 6 * np.sum(spread ** 2) ** 1.5
    acceleration = np.sum(spread ** 3) / denominator if denominator > 0 else 0.0
    z = stats.norm.ppf([(1 - level) / 2, (1 + level) / 2])
    shares = stats.norm.cdf(z0 + (z0 + z) / (1 - acceleration * (z0 + z)))
    low, high = np.quantile(replicates, shares)
    return float(low), float(high)


def per_class_table(labels: np.ndarray, predictions: np.ndarray, class_names: Sequence[str],
                    phylum_of: Mapping[str, str], rank: str = "family") -> pd.DataFrame:
    """Precision, recall, F1 and support of every label seen as truth or prediction, worst F1 first; the name
    column is titled by the rank."""
    present = np.union1d(labels, predictions)
    precision, recall, f1, support = skm.precision_recall_fscore_support(labels, predictions, labels=present,
                                                                          zero_division=0)
    names = [class_names[i] for i in present]
    table = pd.DataFrame({rank: names, "phylum": [phylum_of[n] for n in names],
                          "precision": precision, "recall": recall, "f1": f1, "support": support})
    return table.sort_values(["f1", "support", rank], ascending=[True, False, True], ignore_index=True)


def confusion_counts(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) counts, rows = true label id, columns = predicted label id."""
    return skm.confusion_matrix(labels, predictions, labels=np.arange(num_classes))


def top_confusions(confusion: np.ndarray, class_names: Sequence[str], phylum_of: Mapping[str, str],
                   limit: int = CONFUSIONS_LISTED) -> pd.DataFrame:
    """The most frequent (true, predicted) mistakes, with the share of the true label's images they take."""
    mistakes = confusion * (1 - np.eye(len(confusion), dtype=confusion.dtype))
    true, predicted = np.nonzero(mistakes)
    names = np.asarray(class_names, dtype=object)
    phyla = np.array([phylum_of[n] for n in class_names], dtype=object)
    table = pd.DataFrame({"true": names[true], "predicted": names[predicted],
                          "count": mistakes[true, predicted],
                          "share_of_true": mistakes[true, predicted] / confusion.sum(axis=1)[true],
                          "same_phylum": phyla[true] == phyla[predicted]})
    return table.sort_values(["count", "share_of_true", "true"], ascending=[False, False, True],
                             ignore_index=True).head(limit)


def taxonomy_metrics(labels: np.ndarray, predictions: np.ndarray, class_names: Sequence[str],
                     phylum_of: Mapping[str, str], rank: str = "family") -> dict:
    """Phylum accuracy implied by the label predictions, and the share of errors that at least land in the
    right phylum: a model that confuses two corals is less wrong than one that calls a coral a bat."""
    phyla = np.array([phylum_of[n] for n in class_names], dtype=object)
    true_phyla, predicted_phyla = phyla[labels], phyla[predictions]
    wrong = labels != predictions
    per_phylum = {}
    for phylum in sorted(set(true_phyla)):
        members = true_phyla == phylum
        per_phylum[str(phylum)] = {"examples": int(members.sum()),
                                   f"{rank}_accuracy": float(np.mean(~wrong[members])),
                                   "phylum_accuracy": float(np.mean(predicted_phyla[members] == phylum))}
    return {
        "phylum_accuracy": float(skm.accuracy_score(true_phyla, predicted_phyla)),
        "errors": int(wrong.sum()),
        "errors_within_phylum_share": (float(np.mean(true_phyla[wrong] == predicted_phyla[wrong]))
                                       if wrong.any() else math.nan),
        "per_phylum": per_phylum,
    }


def taxonomy_paths(class_names: Sequence[str],
                   ancestors: pd.DataFrame | Mapping[str, Sequence[str]]) -> np.ndarray:
    """(labels, depth) names: row i is class_names[i]'s ancestors from phylum down, then the name itself.

    `ancestors` maps each label name to its ancestors, phylum first: a frame indexed by name with one column
    per rank above the label's (like tfds_rarespecies.labels.ancestors(rank)), or a dict of tuples.
    """
    table = ancestors if isinstance(ancestors, pd.DataFrame) else pd.DataFrame.from_dict(
        {name: list(path) for name, path in ancestors.items()}, orient="index")
    missing = [name for name in class_names if name not in table.index]
    if missing:
        raise ValueError(f"no ancestors for {len(missing)} labels (first: {missing[0]}): the taxonomy table "
                         "must hold every label of the model")
    rows = table.loc[list(class_names)].fillna("").astype(str).to_numpy(dtype=object)
    return np.column_stack([rows, np.asarray(class_names, dtype=object)])


def lca_heights(paths: np.ndarray) -> np.ndarray:
    """(labels, labels) height of the lowest common ancestor of two labels in the tree (Bertinetto et al.,
    "Making Better Mistakes", CVPR 2020): the number of ranks one climbs from the label's rank until the two
    paths meet.

    For labels at depth d (family: 4) the height is d minus the ranks the paths share from the phylum down:
    for family labels 0 same family, 1 same order, 2 same class, 3 same phylum, 4 only the root; for species
    labels the same with genus (1) and family (2) below, up to 6. Heights are thus comparable within one label
    rank only. An empty (unknown) ancestor matches nothing, so a mistake is never credited with a closeness the
    taxonomy does not show; a label is always at height 0 from itself.
    """
    known = paths != ""
    same = (paths[:, None, :] == paths[None, :, :]) & known[:, None, :] & known[None, :, :]
    shared = np.cumprod(same, axis=2).sum(axis=2)
    heights = paths.shape[1] - shared
    np.fill_diagonal(heights, 0)
    return heights


def mistake_severity(labels: np.ndarray, predictions: np.ndarray, heights: np.ndarray) -> float:
    """Average mistake severity: the mean LCA height (`lca_heights`) of truth and prediction over the
    mistakes only (NaN without mistakes), so it says how far the model misses when it misses."""
    wrong = labels != predictions
    return float(heights[labels[wrong], predictions[wrong]].mean()) if wrong.any() else math.nan


def mistake_severity_floor(labels: np.ndarray, predictions: np.ndarray, heights: np.ndarray) -> float:
    """The least average mistake severity any answer could have on the same mistaken images: the mean, over
    the mistakes, of the height from each true label to its nearest other label (1 with a sister family in the
    order, 2 for a family alone in its order, ...; NaN without mistakes). Severity minus floor is the room a
    better-mistakes method has without turning mistakes into right answers."""
    wrong = labels != predictions
    if not wrong.any():
        return math.nan
    others = np.where(np.eye(len(heights), dtype=bool), np.inf, heights)
    return float(others.min(axis=1)[labels[wrong]].mean())


def hierarchical_distance_at_k(labels: np.ndarray, probabilities: np.ndarray, heights: np.ndarray,
                               k: int) -> float:
    """Hierarchical distance@k: the mean LCA height between the truth and each of the k most probable labels,
    over all images (a right top-1 counts 0)."""
    top = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return float(heights[labels[:, None], top].mean())


def severity_metrics(labels: np.ndarray, probabilities: np.ndarray, class_names: Sequence[str],
                     ancestors: pd.DataFrame | Mapping[str, Sequence[str]]) -> dict:
    """The taxonomy-aware error of metrics.json: average mistake severity and its floor on the same mistakes,
    hierarchical distance@k, and the root's height (the scale: 4 for family labels, 6 for species)."""
    paths = taxonomy_paths(class_names, ancestors)
    heights = lca_heights(paths)
    predictions = probabilities.argmax(axis=1)
    return {"mistake_severity": mistake_severity(labels, predictions, heights),
            "mistake_severity_floor": mistake_severity_floor(labels, predictions, heights),
            **{f"hierarchical_distance_at_{k}": hierarchical_distance_at_k(labels, probabilities, heights, k)
               for k in HIERARCHICAL_K},
            "lca_root_height": int(paths.shape[1])}


def rank_scores(truth: np.ndarray, predictions: np.ndarray, strata: np.ndarray | None = None,
                resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> dict | None:
    """Accuracy and macro-F1 of ids at one rank, each with its BCa interval resampled within strata (default
    the truth), over the images whose truth is known (>= 0); None when none is."""
    truth, predictions = np.asarray(truth), np.asarray(predictions)
    known = truth >= 0
    if not known.any():
        return None
    strata = truth if strata is None else np.asarray(strata)
    intervals = bootstrap_intervals(truth[known], predictions[known], resamples, seed, strata=strata[known])
    return {"examples": int(known.sum()), "accuracy": float(skm.accuracy_score(truth[known], predictions[known])),
            "macro_f1": macro_f1(truth[known], predictions[known]), "accuracy_ci95": list(intervals["accuracy"]),
            "macro_f1_ci95": list(intervals["macro_f1"])}


def upper_rank_metrics(labels: np.ndarray, probabilities: np.ndarray, class_names: Sequence[str],
                       ancestors: pd.DataFrame | Mapping[str, Sequence[str]], resamples: int = BOOTSTRAP_RESAMPLES,
                       seed: int = 0, strata: np.ndarray | None = None) -> dict:
    """Accuracy and macro-F1 with their BCa intervals at every rank above the labels' (phylum, class, ...):
    the predicted label's ancestor against the true one (a family prediction implies its order, class and
    phylum, as trainer/numbers/rollup.py's consistent predictions do), resampled within strata (default the
    label: the split's strata). Images whose true ancestor is unknown sit out; a rank known for none of them is
    left out."""
    paths = taxonomy_paths(class_names, ancestors)
    predicted = probabilities.argmax(axis=1)
    strata = labels if strata is None else strata
    results = {}
    for rank, column in zip(RANKS, paths.T[:-1]):
        _, ids = np.unique(column, return_inverse=True)
        ids = np.where(column == "", -1, ids)
        scores = rank_scores(ids[labels], ids[predicted], strata, resamples, seed)
        if scores is not None:
            results[rank] = scores
    return results


def risk_coverage_curve(confidences: np.ndarray, correct: np.ndarray) -> pd.DataFrame:
    """Selective risk against coverage for the rule "answer when confidence >= threshold", one row per
    distinct confidence, highest first: the share of images answered and the error rate among them."""
    order = np.argsort(-confidences, kind="stable")
    sorted_confidence = confidences[order]
    errors = np.cumsum(~np.asarray(correct, dtype=bool)[order])
    last = np.flatnonzero(np.r_[sorted_confidence[1:] != sorted_confidence[:-1], True])
    answered = last + 1
    return pd.DataFrame({"threshold": sorted_confidence[last], "coverage": answered / len(confidences),
                         "risk": errors[last] / answered})


def area_under_risk_coverage(curve: pd.DataFrame) -> float:
    """AURC: the risk-coverage step curve's area (Geifman & El-Yaniv); lower is better, the error rate of
    answering everything when confidence carries no information."""
    coverage = curve["coverage"].to_numpy()
    return float(np.sum(curve["risk"].to_numpy() * np.diff(coverage, prepend=0.0)))


def abstention_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict:
    """AURC of abstaining below a top-1 probability threshold, over the whole curve, and the curve itself at
    its first row reaching each 1/RISK_COVERAGE_POINTS of coverage (enough to plot, and metrics.json stays
    readable at thousands of images)."""
    curve = risk_coverage_curve(probabilities.max(axis=1), probabilities.argmax(axis=1) == labels)
    steps = np.linspace(0, 1, RISK_COVERAGE_POINTS + 1)[1:]
    shown = curve.iloc[np.unique(np.searchsorted(curve["coverage"].to_numpy(), steps - 1e-12))]
    return {"aurc": area_under_risk_coverage(curve),
            "risk_coverage": {column: shown[column].tolist() for column in shown.columns}}


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


@dataclasses.dataclass(frozen=True)
class LabelSpace:
    """What the label ids mean: their names at `rank`, each name's phylum, and each name's ancestors (see
    taxonomy_paths; None: no tree, so no mistake severity, hierarchical distances or upper ranks)."""

    class_names: Sequence[str]
    phylum_of: Mapping[str, str]
    rank: str = "family"
    ancestors: pd.DataFrame | Mapping[str, Sequence[str]] | None = None


@dataclasses.dataclass(frozen=True)
class Resampling:
    """How the bootstrap draws its 95% intervals: resamples, seed, and the strata it resamples within (ids at
    strata_rank, which metrics.json names; None: within the label)."""

    resamples: int = BOOTSTRAP_RESAMPLES
    seed: int = 0
    strata: np.ndarray | None = None
    strata_rank: str | None = None


def evaluation_metrics(labels: np.ndarray, probabilities: np.ndarray, space: LabelSpace,
                       resampling: Resampling = Resampling()) -> dict:
    """Every number of metrics.json for one split (see reports.write_report)."""
    predictions = probabilities.argmax(axis=1)
    resamples, seed, strata = resampling.resamples, resampling.seed, resampling.strata
    class_names, ancestors, rank = space.class_names, space.ancestors, space.rank
    intervals = bootstrap_intervals(labels, predictions, resamples, seed, strata=strata)
    return {
        "examples": int(len(labels)),
        "label_rank": rank,
        "labels_present": int(len(np.unique(labels))),
        **headline_metrics(labels, probabilities),
        "accuracy_ci95": list(intervals["accuracy"]),
        "macro_f1_ci95": list(intervals["macro_f1"]),
        "bootstrap": {"resamples": resamples, "seed": seed, "level": CONFIDENCE_LEVEL, "method": "BCa",
                      "resampling": f"within {resampling.strata_rank or rank}"},
        **taxonomy_metrics(labels, predictions, class_names, space.phylum_of, rank),
        **({**severity_metrics(labels, probabilities, class_names, ancestors),
            "ranks": upper_rank_metrics(labels, probabilities, class_names, ancestors, resamples, seed, strata)}
           if ancestors is not None else {}),
        **abstention_metrics(labels, probabilities),
        "expected_calibration_error": expected_calibration_error(labels, probabilities),
        "calibration_bins": CALIBRATION_BINS,
    }
