"""Frozen-backbone features: run a backbone once over a split and keep its pooled embeddings on disk.

Training or tuning a head on a frozen backbone needs the forward pass once, not once per epoch or trial. The
cache file is named by a hash of everything the embeddings depend on (dataset name/config/version and the
split's size, split, backbone, weights identifier, image size, decoding version), and the key is stored in
the file and checked on reading: a changed part means a different file, so a stale cache is never read.
"""

import dataclasses
import hashlib
import json
import math
import os
import pathlib
import tempfile

import keras
import numpy as np
import tensorflow as tf
import tqdm

from pipelines import datasets, reading
from pipelines.config import InputConfig
from tfds_rarespecies.labels import RANKS

# Bump when decoding or scaling of evaluation images, or the arrays a cache file holds, change: files cached
# before then are stale (2: label ids of all six ranks).
DECODING_VERSION = 2


@dataclasses.dataclass(frozen=True)
class Features:
    """Embeddings of one split, row-aligned with their label ids at every rank and file names (the join key)."""

    embeddings: np.ndarray
    labels: dict[str, np.ndarray]
    file_names: np.ndarray

    def dataset(self, batch_size: int, heads: tuple[str, ...] = ("family",), shuffle_seed: int | None = None):
        """tf.data of (embedding, label) batches: ids of the one head's rank, or {rank: ids} for several."""
        labels = {rank: self.labels[rank] for rank in heads} if len(heads) > 1 else self.labels[heads[0]]
        rows = tf.data.Dataset.from_tensor_slices((self.embeddings, labels))
        if shuffle_seed is not None:
            rows = rows.shuffle(len(self.file_names), seed=shuffle_seed, reshuffle_each_iteration=True)
        return rows.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def weights_id(weights: str, seed: int) -> str:
    """Names backbone weights for the cache key: "imagenet" or "pretrained" (the published weights), a weights
    file or keras-hub preset directory by its content hash (wherever it lives), random initialisation by its
    seed (only a seeded initialisation is reproducible)."""
    if weights in ("imagenet", "pretrained"):
        return weights
    if weights == "none":
        return f"random-seed{seed}"
    return f"file-{weights_digest(weights)[:16]}"


def weights_digest(weights: str) -> str:
    """sha256 of a weights file, or of a keras-hub preset directory's config.json and *.weights.h5 files (by
    name; what the network is built and loaded from, not its metadata or tokenizer), read in 1 MiB blocks."""
    path = pathlib.Path(weights).expanduser()
    files = sorted([path / "config.json", *path.glob("*.weights.h5")]) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for file in files:
        if path.is_dir():
            digest.update(f"{file.name}\0".encode())
        with open(file, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def cache_key(cfg: InputConfig, split: str, weights_id: str) -> dict:
    """Everything the embeddings depend on."""
    info = reading.load_builder(cfg).info
    return {"dataset": info.full_name, "split": split, "num_examples": info.splits[split].num_examples,
            "num_bytes": info.splits[split].num_bytes, "backbone": cfg.backbone, "weights": weights_id,
            "image_size": cfg.image_size, "decoding_version": DECODING_VERSION}


def cached_features(model: keras.Model, weights_id: str, cfg: InputConfig, split: str,
                    cache_dir: os.PathLike) -> Features:
    """The model's outputs (pooled embeddings) for every example of the split, from cache_dir when cached.

    model: takes images scaled for cfg.backbone at cfg.image_size (e.g. the backbone with pooling="avg").
    weights_id: names the weights ("imagenet", a checkpoint path and step, a hash): part of the cache key.
    """
    key = cache_key(cfg, split, weights_id)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    path = pathlib.Path(cache_dir) / f"{cfg.backbone}_{cfg.image_size}px_{digest}.npz"
    cached = _load(path, key)
    if cached is not None:
        return cached
    features = _forward(model, cfg, split, key["num_examples"])
    _save(path, key, features)
    return features


def _forward(model: keras.Model, cfg: InputConfig, split: str, num_examples: int) -> Features:
    """Every example once, in stored order, through the model called directly (not `predict_on_batch`): under a
    multi-replica strategy Keras' predict functions split and regather each batch, which is not one row per
    image; a direct call reads the variables' local copies and returns exactly one row per image, whatever
    strategy built the model, so the cache (whose key ignores the strategy) holds the same numbers."""
    plain = dataclasses.replace(cfg, augment_on_device=False, mixup_alpha=0.0, cutmix_alpha=0.0, heads=RANKS,
                                class_weights="none")
    batches = datasets.make_dataset(plain, split, training=False, with_file_names=True)
    embed = tf.function(lambda images: tf.cast(model(images, training=False), tf.float32), reduce_retracing=True)
    embeddings, ids, names = [], {rank: [] for rank in RANKS}, []
    total = math.ceil(num_examples / cfg.batch_size)
    for images, labels, file_names in tqdm.tqdm(batches, total=total, desc=f"features {cfg.backbone} {split}",
                                                unit="batch", disable=None):
        embeddings.append(embed(images).numpy())
        for rank in RANKS:
            ids[rank].append(labels[rank].numpy())
        names.append(file_names.numpy().astype(str))
    return Features(np.concatenate(embeddings), {rank: np.concatenate(parts) for rank, parts in ids.items()},
                    np.concatenate(names))


def _load(path: pathlib.Path, key: dict) -> Features | None:
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as stored:
        if json.loads(str(stored["key"])) != key:
            return None
        return Features(stored["embeddings"], {rank: stored[f"labels_{rank}"] for rank in RANKS},
                        stored["file_names"])


def _save(path: pathlib.Path, key: dict, features: Features) -> None:
    """Writes beside the target, flushes to disk and renames, so a concurrent reader, or a run after a kill at
    any instant, never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as handle:
        np.savez(handle, key=json.dumps(key, sort_keys=True), embeddings=features.embeddings,
                 file_names=features.file_names, **{f"labels_{rank}": ids for rank, ids in features.labels.items()})
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(handle.name, path)
