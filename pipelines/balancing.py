"""Class imbalance (29..300 images per family): class weights, class-balanced sampling, targeted oversampling.

Three independent levers the trainer can combine:
- class weights scale each example's loss (`class_weights`); normalised so the average weight over the
  training examples is 1 and the loss scale (hence the learning rate) matches unweighted training;
- sampling with a temperature changes which examples a batch holds (`resample`): p_c ∝ n_c ** T;
- targeted oversampling repeats the images of chosen families within an epoch (`oversample`), each copy
  decoded and augmented independently because copies are made before decoding.
"""

import numpy as np
import tensorflow as tf

SCHEMES = ("balanced", "sqrt", "effective_number")


def check_scheme(scheme: str) -> None:
    if scheme not in SCHEMES:
        raise ValueError(f"unknown class weighting {scheme!r}: choose one of {', '.join(SCHEMES)}")


def class_weights(counts, scheme: str, beta: float = 0.999) -> dict[int, float]:
    """Per-class loss weights from training label counts; classes without examples are left out.

    balanced: n / (k * n_c) (scikit-learn's "balanced"; k = classes present);
    sqrt: proportional to 1 / sqrt(n_c);
    effective_number: proportional to (1 - beta) / (1 - beta ** n_c) (Cui et al. 2019, "Class-Balanced Loss
    Based on Effective Number of Samples"). All three satisfy sum_c n_c * w_c = n.
    """
    check_scheme(scheme)
    counts = np.asarray(counts, dtype=np.float64)
    present = np.flatnonzero(counts > 0)
    n_c = counts[present]
    if scheme == "balanced":
        raw = 1.0 / n_c
    elif scheme == "sqrt":
        raw = 1.0 / np.sqrt(n_c)
    else:
        raw = (1.0 - beta) / (1.0 - np.power(beta, n_c))
    weights = raw * n_c.sum() / (raw * n_c).sum()
    return {int(c): float(w) for c, w in zip(present, weights)}


def weight_vector(weights: dict[int, float], num_classes: int) -> np.ndarray:
    """The dict as a dense float32 lookup table (0 for absent classes), for tf.gather in the pipeline."""
    table = np.zeros(num_classes, dtype=np.float32)
    for label, weight in weights.items():
        table[label] = weight
    return table


def target_distribution(counts, temperature: float) -> np.ndarray:
    """p_c ∝ n_c ** temperature over the classes present (1 = natural frequencies, 0 = uniform)."""
    counts = np.asarray(counts, dtype=np.float64)
    scores = np.where(counts > 0, np.power(np.maximum(counts, 1.0), temperature), 0.0)
    return scores / scores.sum()


def resample(examples: tf.data.Dataset, label_of, counts, temperature: float, seed: int) -> tf.data.Dataset:
    """Class-balanced sampling of an infinite (repeated) dataset by rejection; temperature 1 changes nothing.

    `rejection_resample` mixes the source with a per-class filtered copy through `sample_from_datasets`,
    reading the files once, where one filtered dataset per class would read them once per class (202 times).
    """
    if temperature == 1.0:
        return examples
    counts = np.asarray(counts, dtype=np.float64)
    present = np.flatnonzero(counts > 0)
    # Classes are renumbered over those present: an absent class would make the acceptance ratios 0 / 0.
    position = np.zeros(len(counts), dtype=np.int64)
    position[present] = np.arange(len(present))
    positions = tf.constant(position)
    resampled = examples.rejection_resample(
        lambda example: tf.gather(positions, tf.cast(label_of(example), tf.int64)),
        target_dist=target_distribution(counts[present], temperature).astype(np.float32),
        initial_dist=(counts[present] / counts.sum()).astype(np.float32), seed=seed)
    return resampled.map(lambda _, example: example)


def oversample(examples: tf.data.Dataset, label_of, class_ids, extra_views: int) -> tf.data.Dataset:
    """Each example of the listed classes appears 1 + extra_views times, the others once."""
    listed = tf.constant(sorted(class_ids), dtype=tf.int64)

    def views(example):
        is_listed = tf.reduce_any(tf.equal(tf.cast(label_of(example), tf.int64), listed))
        copies = tf.where(is_listed, tf.constant(1 + extra_views, tf.int64), tf.constant(1, tf.int64))
        return tf.data.Dataset.from_tensors(example).repeat(copies)

    return examples.flat_map(views)
