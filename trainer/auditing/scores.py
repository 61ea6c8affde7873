"""Scores that point a person at the bad images of the dataset: pure functions of pixels, embeddings, labels
and hashes.

Nothing here reads a dataset, a model or a flag, so the audit app and the tests share one implementation and
every threshold arrives as an argument; proposals.py turns the scores into flags and proposals. Each detector
answers one question:
- non-photo statistics: is this a page, a table or a flat fill rather than a photograph?
- family outliers: does this image sit far from the other images of its family in embedding space?
- label issues: does a head trained without this image (out of fold) disagree with its family? (cleanlab)
- duplicates: is this picture in the dataset more than once, perhaps in two splits? (the builder's hashes)
and one asks how far the label-issue detector itself can be trusted: head_quality.
"""

import dataclasses
import math
from collections.abc import Sequence

import cleanlab.filter
import numpy as np
import pandas as pd
from PIL import Image
from sklearn import decomposition, linear_model, metrics, model_selection, pipeline, preprocessing

from tfds_rarespecies import imaging, splits

_SPLIT_ORDER = {name: i for i, name in enumerate(splits.SPLITS)}

# Pixel statistics and the colour embedding are measured at this short side (larger images are shrunk first),
# so one set of thresholds holds for every stored size (128, 256, 342) and 12k images take about a minute.
MEASURED_SHORT_SIDE = 128
# Principal components the label-issue head sees at most.
_HEAD_DIMENSIONS = 256
# Per-channel levels of the colour quantisation behind colour_count and the colour histogram embedding.
_LEVELS = 16
# A grey-level step between neighbouring pixels that counts as an edge (sharp print edges, not JPEG noise).
_EDGE_STEP = 48
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclasses.dataclass(frozen=True)
class HeadQuality:
    """How well the out-of-fold head reads the given families: the audit's own reliability. Measured against
    the given labels, wrong ones included, so a dataset with 3% bad labels caps accuracy near 0.97.

    images: rows the head scored (families of one image cannot be held out). NaN scores: no head ran.
    """

    accuracy: float
    macro_f1: float
    images: int


def image_statistics(image: np.ndarray) -> dict[str, float]:
    """Cheap statistics of one uint8 RGB image that separate photographs from pages and fills.

    colourfulness: Hasler & Suesstrunk's M (2003), about 0 for grey pages, over 30 for most photos.
    saturation: mean HSV saturation.
    colour_count: how many colours (16 levels per channel) cover 95% of the pixels: 1 for a flat fill, a
      handful for a printed page, dozens to hundreds for a photo.
    edge_density: share of pixels with a sharp grey-level step to a neighbour (print strokes, table lines).
    paper_fraction: share of bright, unsaturated pixels (white or yellowed paper background).
    """
    image = _shrunk(image)
    pixels = np.asarray(image, dtype=np.float32)
    red, green, blue = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    red_green, yellow_blue = red - green, 0.5 * (red + green) - blue
    colourfulness = (np.hypot(red_green.std(), yellow_blue.std())
                     + 0.3 * np.hypot(red_green.mean(), yellow_blue.mean()))
    brightest, darkest = pixels.max(axis=-1), pixels.min(axis=-1)
    saturation = (brightest - darkest) / np.maximum(brightest, 1.0)
    grey = pixels @ _LUMA
    steps = (np.abs(np.diff(grey, axis=1))[:-1, :] > _EDGE_STEP) | (np.abs(np.diff(grey, axis=0))[:, :-1] > _EDGE_STEP)
    return {
        "colourfulness": float(colourfulness),
        "saturation": float(saturation.mean()),
        "colour_count": _colours_covering(_quantised_colours(image), 0.95),
        "edge_density": float(steps.mean()),
        "paper_fraction": float(((grey > 180) & (saturation < 0.25)).mean()),
    }


def non_photo_score(statistics: pd.DataFrame) -> np.ndarray:
    """0..1 per image (rows of image_statistics): the larger of a flat-fill test and a printed-page test.

    flat: 1 at up to 2 covering colours, 0 from 8 on (log scale). page: the product of paper background
    (20% -> 0, 50% -> 1), greyness (colourfulness 20 -> 0, 10 -> 1; Hasler & Suesstrunk call 15 "slightly
    colourful") and print edges (1% -> 0, 5% -> 1): all three are needed, so a pale animal on snow (bright
    and grey, but with few sharp edges) is not taken for a page.
    """
    flat = _ramp(np.log2(np.maximum(statistics["colour_count"].to_numpy(float), 1)), 3.0, 1.0)
    page = (_ramp(statistics["paper_fraction"].to_numpy(float), 0.2, 0.5)
            * _ramp(statistics["colourfulness"].to_numpy(float), 20.0, 10.0)
            * _ramp(statistics["edge_density"].to_numpy(float), 0.01, 0.05))
    return np.maximum(flat, page)


def colour_embedding(image: np.ndarray) -> np.ndarray:
    """A handcrafted 72-number embedding: a 4x4x4 colour histogram and an 8-bin gradient-orientation histogram,
    each normalised and square-rooted (Hellinger), so Euclidean and cosine distances compare distributions.

    For CPU-only audits and tests: no network to run. On the generated test images (colour and stripe direction
    say the family) it finds the planted problems as well as the baseline CNN does; on real photos colour is a
    weak cue to the family, so its label issues and outliers are far noisier than a pretrained backbone's.
    """
    image = _shrunk(image)
    codes = _quantised_colours(image, levels=4)
    colours = np.bincount(codes, minlength=64).astype(np.float64)
    grey = np.asarray(image, dtype=np.float32) @ _LUMA
    dy, dx = np.gradient(grey)
    angle = np.mod(np.arctan2(dy, dx), np.pi)
    bins = np.minimum((angle / np.pi * 8).astype(int), 7)
    orientations = np.bincount(bins.ravel(), weights=np.hypot(dx, dy).ravel(), minlength=8)
    return np.concatenate([np.sqrt(colours / max(colours.sum(), 1e-12)),
                           np.sqrt(orientations / max(orientations.sum(), 1e-12))]).astype(np.float32)


def family_outlier_scores(embeddings: np.ndarray, families: Sequence[str], neighbours: int = 5) -> np.ndarray:
    """Robust z-score, within its family, of each image's mean cosine distance to its nearest family members.

    The kNN distance says how far an image is from the rest of its family; the robust z (median and MAD of
    that family's distances) makes scores comparable between a tight family of corals and a varied family
    of birds. Families of fewer than 3 images have no spread to compare with: NaN.
    """
    families = np.asarray(families, dtype=object)
    scores = np.full(len(families), np.nan)
    for family in np.unique(families):
        members = np.flatnonzero(families == family)
        if len(members) < 3:
            continue
        distances = metrics.pairwise_distances(embeddings[members], metric="cosine")
        np.fill_diagonal(distances, np.inf)
        k = min(neighbours, len(members) - 1)
        knn = np.sort(distances, axis=1)[:, :k].mean(axis=1)
        median = np.median(knn)
        spread = 1.4826 * np.median(np.abs(knn - median))
        scores[members] = (knn - median) / max(spread, 1e-6 * max(median, 1e-12))
    return scores


def out_of_fold_probabilities(embeddings: np.ndarray, labels: np.ndarray, folds: int = 5,
                              seed: int = 0) -> np.ndarray:
    """(n, classes) family probabilities, each row from a logistic-regression head that never saw the image.

    labels: integer ids 0..classes-1. Folds are stratified; their number drops to the size of the smallest
    family (at least 2) so every family is in every training fold. Families with a single image cannot be
    held out and keep a NaN row. The head sees standardised embeddings projected on their first 256 principal
    components: five fits on 12k x 2048 InceptionV3 embeddings then take minutes, not an hour, on a CPU.
    """
    labels = np.asarray(labels)
    classes = int(labels.max()) + 1
    counts = np.bincount(labels, minlength=classes)
    scorable = counts[labels] >= 2
    probabilities = np.full((len(labels), classes), np.nan)
    present = np.unique(labels[scorable])
    if len(present) < 2:
        return probabilities
    n_splits = int(max(2, min(folds, counts[present].min())))
    # Training folds hold at least half the images, so PCA never asks for more components than samples.
    components = min(_HEAD_DIMENSIONS, embeddings.shape[1], int(scorable.sum()) // 2)
    steps = [preprocessing.StandardScaler()]
    if components < embeddings.shape[1]:
        steps.append(decomposition.PCA(components, random_state=seed))
    head = pipeline.make_pipeline(*steps, linear_model.LogisticRegression(max_iter=1000))
    folding = model_selection.StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    probabilities[np.ix_(scorable, present)] = model_selection.cross_val_predict(
        head, embeddings[scorable], labels[scorable], cv=folding, method="predict_proba")
    probabilities[np.ix_(scorable, np.setdiff1d(np.arange(classes), present))] = 0.0
    return probabilities


def label_issue_ranks(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """1-based rank per image among cleanlab's label issues (1 = least likely its given label), 0 = no issue.

    Rows with NaN probabilities (unscorable families) are left out. cleanlab's confident learning estimates
    the noise per (given, true) family pair from the out-of-fold probabilities and prunes accordingly.
    """
    labels = np.asarray(labels)
    ranks = np.zeros(len(labels), dtype=np.int64)
    scored = np.flatnonzero(~np.isnan(probabilities).any(axis=1))
    present = np.unique(labels[scored])
    if len(present) < 2:
        return ranks
    dense = np.searchsorted(present, labels[scored])
    columns = probabilities[np.ix_(scored, present)]
    columns = columns / np.maximum(columns.sum(axis=1, keepdims=True), 1e-12)
    issues = cleanlab.filter.find_label_issues(dense, columns, return_indices_ranked_by="self_confidence")
    ranks[scored[issues]] = np.arange(1, len(issues) + 1)
    return ranks


def head_quality(labels: np.ndarray, probabilities: np.ndarray) -> HeadQuality:
    """Accuracy and macro-F1 (over the given families) of the out-of-fold head's top family, on the rows it
    scored (out_of_fold_probabilities' non-NaN rows)."""
    labels = np.asarray(labels)
    scored = ~np.isnan(probabilities).any(axis=1)
    if not scored.any():
        return HeadQuality(math.nan, math.nan, 0)
    predicted = probabilities[scored].argmax(axis=1)
    return HeadQuality(float(metrics.accuracy_score(labels[scored], predicted)),
                       float(metrics.f1_score(labels[scored], predicted, labels=np.unique(labels[scored]),
                                              average="macro", zero_division=0)),
                       int(scored.sum()))


def duplicate_clusters(table: pd.DataFrame, max_distance: int = splits.NEAR_DUPLICATE_MAX_DISTANCE
                       ) -> pd.DataFrame:
    """Clusters of copies (the builder's own grouping: splits.duplicate_groups), one row per input row.

    table: columns file_name, rare_species_id, family, split, content_sha256, phash. Result columns:
      duplicate_cluster: group id, -1 when the image is alone;
      duplicate_kind: "exact" (same file bytes) or "near" (perceptual hashes within max_distance bits);
      cluster_families, cluster_splits: "+"-joined names over the cluster;
      leak: the cluster straddles splits (a copy of a test image is trained on);
      label_conflict: the cluster spans families, which only the same bytes filed twice can do (near
        copies are linked within a family only);
      duplicate_of: for an extra copy, the rare_species_id of the copy kept (the one in the earliest split,
        then the smallest id); empty for the kept copy, lone images and label conflicts (no copy is right).
    """
    groups = pd.Series(splits.duplicate_groups(table["file_name"].tolist(), table["family"].tolist(),
                                               table["content_sha256"].tolist(), table["phash"].tolist(),
                                               max_distance=max_distance), index=table.index)
    sizes = groups.map(groups.value_counts())
    result = pd.DataFrame({"duplicate_cluster": np.where(sizes > 1, groups, -1), "duplicate_kind": "",
                           "cluster_families": "", "cluster_splits": "", "leak": False, "label_conflict": False,
                           "duplicate_of": ""}, index=table.index)
    for _, members in table[sizes > 1].groupby(groups[sizes > 1]):
        cluster_splits = sorted(set(members["split"]), key=_SPLIT_ORDER.get)
        exact = members["content_sha256"].nunique() == 1
        conflict = members["family"].nunique() > 1
        kept = members.assign(order=members["split"].map(_SPLIT_ORDER)).sort_values(
            ["order", "rare_species_id"])["rare_species_id"].iloc[0]
        result.loc[members.index, "duplicate_kind"] = "exact" if exact else "near"
        result.loc[members.index, "cluster_families"] = "+".join(sorted(set(members["family"])))
        result.loc[members.index, "cluster_splits"] = "+".join(cluster_splits)
        result.loc[members.index, "leak"] = len(cluster_splits) > 1
        result.loc[members.index, "label_conflict"] = conflict
        if not conflict:
            extras = members.index[members["rare_species_id"] != kept]
            result.loc[extras, "duplicate_of"] = kept
    return result


def _shrunk(image: np.ndarray) -> np.ndarray:
    """The image at MEASURED_SHORT_SIDE, resized by the builder's own resizer (never upscaled)."""
    return np.asarray(imaging.resize_short_side(Image.fromarray(np.asarray(image, dtype=np.uint8)),
                                                MEASURED_SHORT_SIDE))


def _quantised_colours(image: np.ndarray, levels: int = _LEVELS) -> np.ndarray:
    """One integer code per pixel: the pixel's colour at `levels` levels per channel."""
    q = np.asarray(image, dtype=np.int64) * levels // 256
    return (q[..., 0] * levels * levels + q[..., 1] * levels + q[..., 2]).ravel()


def _colours_covering(codes: np.ndarray, share: float) -> int:
    counts = np.sort(np.bincount(codes))[::-1]
    return int(np.searchsorted(np.cumsum(counts), share * codes.size) + 1)


def _ramp(values: np.ndarray, zero_at: float, one_at: float) -> np.ndarray:
    """Linear 0 -> 1 between zero_at and one_at (either direction), clipped."""
    return np.clip((values - zero_at) / (one_at - zero_at), 0.0, 1.0)
