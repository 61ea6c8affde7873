"""MixUp and CutMix of a batch: images, one-hot labels and sample weights mixed with one coefficient.

Mixing needs the labels, which a layer at the front of the model never sees, so it always runs in tf.data,
whichever placement the other augmentations use. One Beta(alpha, alpha) draw per batch pairs each image with
another of the same batch (a seeded permutation); with both alphas set, each batch uses one of the two at
random. All randomness is stateless, from the per-batch seed the pipeline passes in.
"""

import tensorflow as tf


def _beta(seed, alpha: float):
    gammas = tf.random.stateless_gamma([2], seed, alpha=alpha)
    return gammas[0] / (gammas[0] + gammas[1])


def _mixup(images, partners, seed, alpha: float):
    share = _beta(seed, alpha)
    return share, share * images + (1.0 - share) * partners


def _cutmix(images, partners, seed, alpha: float):
    """Pastes a box of the partner covering about 1 - share of the area; the share is the exact area kept."""
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    ratio = tf.sqrt(1.0 - _beta(seed, alpha))
    box_h = tf.cast(tf.cast(height, tf.float32) * ratio, tf.int32)
    box_w = tf.cast(tf.cast(width, tf.float32) * ratio, tf.int32)
    centre = tf.random.stateless_uniform([2], tf.random.experimental.stateless_fold_in(seed, 1))
    cy = tf.cast(centre[0] * tf.cast(height, tf.float32), tf.int32)
    cx = tf.cast(centre[1] * tf.cast(width, tf.float32), tf.int32)
    top, bottom = tf.maximum(cy - box_h // 2, 0), tf.minimum(cy + box_h // 2, height)
    left, right = tf.maximum(cx - box_w // 2, 0), tf.minimum(cx + box_w // 2, width)
    rows, cols = tf.range(height), tf.range(width)
    inside = ((rows >= top) & (rows < bottom))[:, None] & ((cols >= left) & (cols < right))[None, :]
    inside = tf.cast(inside, images.dtype)[None, :, :, None]
    share = 1.0 - tf.cast((bottom - top) * (right - left), tf.float32) / tf.cast(height * width, tf.float32)
    return share, images * (1.0 - inside) + partners * inside


def mix_batch(images, targets, seed, mixup_alpha: float, cutmix_alpha: float):
    """Mixes a batch: images (B, H, W, C) float; targets a nest of (B, ...) float tensors (one-hot labels,
    sample weights) mixed with the same share. Returns (images, targets)."""
    permutation = tf.argsort(tf.random.stateless_uniform([tf.shape(images)[0]], seed))
    partners = tf.gather(images, permutation)
    draw_seed = tf.random.experimental.stateless_fold_in(seed, 2)
    if mixup_alpha > 0 and cutmix_alpha > 0:
        use_cutmix = tf.random.stateless_uniform([], tf.random.experimental.stateless_fold_in(seed, 3)) < 0.5
        share, images = tf.cond(use_cutmix, lambda: _cutmix(images, partners, draw_seed, cutmix_alpha),
                                lambda: _mixup(images, partners, draw_seed, mixup_alpha))
    elif cutmix_alpha > 0:
        share, images = _cutmix(images, partners, draw_seed, cutmix_alpha)
    else:
        share, images = _mixup(images, partners, draw_seed, mixup_alpha)
    targets = tf.nest.map_structure(
        lambda target: share * target + (1.0 - share) * tf.gather(target, permutation), targets)
    return images, targets
