"""Few-shot accuracy with the protocol BioCLIP publishes for Rare Species (Stevens et al., CVPR 2024, after
SimpleShot, Wang et al. 2019): per fold, k images of each species are the support, the rest the queries;
embeddings are centred on the support's mean and L2-normalised; each query gets the species of the nearest
support centroid; 5 seeded folds, mean and spread. So a backbone's numbers sit next to the published table.

A species with no more than k images has no query left and sits out the fold (every Rare Species species has
30 images, so none does at k = 1 or 5 on the whole dataset).
"""

import numpy as np
from sklearn import metrics, preprocessing

SHOTS = (1, 5)
FOLDS = 5


def nearest_centroid_accuracy(embeddings: np.ndarray, labels: np.ndarray, shots: int, seed: int) -> float:
    """Query accuracy of one fold: `shots` support images per label drawn with the seed, the rest queries."""
    rng = np.random.default_rng(seed)
    support, queries = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        if len(members) > shots:
            support.append(members[:shots])
            queries.append(members[shots:])
    if not support:
        raise ValueError(f"no label has more than {shots} images: nothing to query at {shots}-shot")
    support, queries = np.concatenate(support), np.concatenate(queries)
    centre = embeddings[support].mean(axis=0)
    normalised = preprocessing.normalize(embeddings - centre)
    names, members = np.unique(labels[support], return_inverse=True)
    centroids = np.stack([normalised[support][members == index].mean(axis=0) for index in range(len(names))])
    predicted = names[metrics.pairwise_distances_argmin(normalised[queries], centroids)]
    return float(np.mean(predicted == labels[queries]))


def few_shot_accuracy(embeddings: np.ndarray, labels: np.ndarray, shots: tuple[int, ...] = SHOTS,
                      folds: int = FOLDS, seed: int = 0) -> dict:
    """{"<k>_shot": {"mean", "std", "folds", "labels", "chance"}} over `folds` seeded folds (seeds
    seed..seed+folds-1): std the sample standard deviation across folds, labels those with a query at k shots,
    chance one over their number."""
    embeddings, labels = np.asarray(embeddings, dtype=np.float64), np.asarray(labels)
    _, counts = np.unique(labels, return_counts=True)
    results = {"folds": folds, "seed": seed}
    for k in shots:
        accuracies = [nearest_centroid_accuracy(embeddings, labels, k, seed + fold) for fold in range(folds)]
        results[f"{k}_shot"] = {"mean": float(np.mean(accuracies)),
                                "std": float(np.std(accuracies, ddof=1)) if folds > 1 else 0.0,
                                "folds": accuracies, "labels": int(np.sum(counts > k)),
                                "chance": 1.0 / int(np.sum(counts > k))}
    return results
