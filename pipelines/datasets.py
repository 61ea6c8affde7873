"""The tf.data pipelines for training and evaluation, for Keras' own distribution or for one input pipeline.

Training, per input pipeline: shuffled files (TFDS, seeded) -> [decode whole and cache in memory, when this
pipeline's share of the decoded images fits cfg.train_cache_bytes] -> targeted oversampling -> example shuffle
-> repeat -> class-balanced resampling -> parallel random-resized crop (decoding only the window, or slicing it
from the cached pixels) and, unless augmentation is on the device, the rest of the recipe and the backbone
scaling (pipelines.cpu_augmentation; stateless, seeded per element) -> batch (drop_remainder: every replica gets
a full batch) -> MixUp/CutMix (linear, so it commutes with the scaling) -> backbone scaling (unless done or on
device) -> prefetch. Training datasets are infinite: the trainer passes `steps_per_epoch`. So on the CPU each
image is augmented before it is mixed (as timm does); on the device the model augments the mixed batch. The
cache holds what every epoch would decode alike (the stored pixels, ~0.5 MB an image at 342 px), so epochs
after the first skip the JPEG decode, the largest cost left before the augmentation (BUILD-notes.md); every
random choice stays per step, and the example shuffle then covers the whole shard.

Evaluation: files in order (always deterministic) -> decode of the central square -> cache (when it fits in
EVAL_CACHE_BYTES) -> batch without dropping the remainder -> scaling -> prefetch. Finite, so every example
counts exactly once.

Two ways to distribute:
- `make_dataset(cfg, split, training, strategy)`: one dataset batched by the global batch size, for
  `model.fit/evaluate` under `strategy.scope()` (Keras splits each batch across the replicas). One worker only.
- `distributed_dataset(strategy, cfg, split, training)`: `strategy.distribute_datasets_from_function`, each
  input pipeline reading its own shard batched per replica; any strategy, multi-worker included. Keras'
  fit/evaluate take it as it is under one-worker strategies; under MultiWorkerMirroredStrategy Keras 3's fit
  fails before the first step (keras-team/keras#20585), so multi-worker training steps it with strategy.run.
"""

import tensorflow as tf

from pipelines import augmentation, backbones, balancing, cpu_augmentation, images, mixing, reading
from pipelines.config import InputConfig

EVAL_CACHE_BYTES = 1 << 30


def make_dataset(cfg: InputConfig, split: str, training: bool, strategy: tf.distribute.Strategy | None = None,
                 input_context: tf.distribute.InputContext | None = None,
                 with_file_names: bool = False) -> tf.data.Dataset:
    """Batches of (images, labels[, sample_weights]) ready for model.fit / evaluate.

    images: float32 (B, S, S, 3), scaled for cfg.backbone (0..255 when cfg.augment_on_device).
    labels: int32 ids at cfg.label_rank, or one-hot float32 with MixUp/CutMix (cfg.soft_labels); a dict
      {rank: those} over cfg.head_ranks when there are several heads.
    sample_weights: float32 (B,), training batches only, when cfg.class_weights is set.
    Without input_context the batch is global (cfg.batch_size x strategy's replicas); with one (from
    distribute_datasets_from_function) it is per replica and the pipeline reads only its shard.
    with_file_names: yield (images, labels, file_names) instead (never sample weights): for prediction
      tables, the feature cache and audits, not for fit.
    """
    if input_context is None:
        if num_workers(strategy) > 1:
            raise ValueError("make_dataset without input_context serves one worker: under a multi-worker "
                             "strategy use distributed_dataset(strategy, cfg, split, training)")
        batch_size = cfg.batch_size * (strategy.num_replicas_in_sync if strategy else 1)
        pipeline_id = 0
    else:
        batch_size = input_context.get_per_replica_batch_size(
            cfg.batch_size * input_context.num_replicas_in_sync)
        pipeline_id = input_context.input_pipeline_id
    builder = reading.load_builder(cfg)
    examples = reading.read_examples(builder, split, training, cfg.seed, input_context)
    seed = tf.constant([cfg.seed, pipeline_id], tf.int64)
    if training:
        decoded = _training_examples(cfg, split, examples, seed, input_context)
    else:
        decoded = _evaluation_examples(cfg, builder, split, examples, input_context)
    batches = decoded.batch(batch_size, drop_remainder=training, num_parallel_calls=tf.data.AUTOTUNE)
    to_model = _ModelInputs(cfg, builder, split, training, with_file_names, pipeline_id)
    batches = batches.enumerate().map(to_model, num_parallel_calls=None if cfg.deterministic else tf.data.AUTOTUNE)
    return batches.prefetch(tf.data.AUTOTUNE).with_options(_options(cfg, training))


def distributed_dataset(strategy: tf.distribute.Strategy, cfg: InputConfig, split: str, training: bool,
                        with_file_names: bool = False):
    """`make_dataset` per input pipeline through `strategy.distribute_datasets_from_function`."""
    return strategy.distribute_datasets_from_function(
        lambda context: make_dataset(cfg, split, training, input_context=context,
                                     with_file_names=with_file_names))


def steps_per_epoch(cfg: InputConfig, split: str = "train", num_replicas: int = 1) -> int:
    """Global batches in one pass over the split, counting the oversampled families' extra views."""
    return max(1, int(_epoch_counts(cfg, split).sum()) // (cfg.batch_size * num_replicas))


def _epoch_counts(cfg: InputConfig, split: str):
    """Examples per label (at cfg.label_rank) in one epoch: the split's counts, listed labels times 1 + extra
    views."""
    counts = reading.label_counts(cfg, split).astype("float64")
    if cfg.oversample_labels:
        counts[reading.label_ids(cfg, cfg.oversample_labels)] *= 1 + cfg.oversample_extra_views
    return counts


def _label_of(cfg: InputConfig):
    return lambda example: example[cfg.label_rank]


def caches_training_images(cfg: InputConfig, split: str,
                           input_context: tf.distribute.InputContext | None = None) -> bool:
    """Whether a training pipeline keeps its decoded stored images in memory: when its share of the split's
    stored pixels (3 bytes each) fits cfg.train_cache_bytes."""
    if cfg.train_cache_bytes <= 0:
        return False
    num_pipelines = input_context.num_input_pipelines if input_context else 1
    return reading.stored_pixels(cfg, split) * 3 / num_pipelines <= cfg.train_cache_bytes


def _training_examples(cfg: InputConfig, split: str, examples: tf.data.Dataset, seed,
                       input_context) -> tf.data.Dataset:
    cached = caches_training_images(cfg, split, input_context)
    if cached:
        examples = examples.map(lambda example: {**example, "image": images.decode(example["image"])},
                                num_parallel_calls=tf.data.AUTOTUNE).cache()
    if cfg.oversample_labels:
        examples = balancing.oversample(examples, _label_of(cfg), reading.label_ids(cfg, cfg.oversample_labels),
                                        cfg.oversample_extra_views)
    counts = _epoch_counts(cfg, split)
    # Cached, the buffer holds references into the cache, not copies: each epoch is a fresh permutation of the
    # whole shard (the first batch waits for the first epoch's decode).
    buffer = max(cfg.shuffle_buffer, int(counts.sum())) if cached else cfg.shuffle_buffer
    examples = examples.shuffle(buffer, seed=cfg.seed, reshuffle_each_iteration=True).repeat()
    examples = balancing.resample(examples, _label_of(cfg), counts, cfg.sampling_temperature, cfg.seed)
    min_area = augmentation.crop_min_area(cfg.augment, cfg.augment_strength)
    on_cpu, backbone = _augments_on_cpu(cfg, training=True), backbones.get_backbone(cfg.backbone)

    def decode(index, example):
        element_seed = tf.random.experimental.stateless_fold_in(seed, index)
        if on_cpu:
            image = cpu_augmentation.augment(example["image"], cfg.image_size, element_seed, cfg.augment,
                                             cfg.augment_strength, backbone)
        elif min_area < 1.0:
            image = images.decode_random_crop(example["image"], cfg.image_size, element_seed, min_area)
        else:
            image = images.decode_center(example["image"], cfg.image_size)
        return {**example, "image": image}

    return examples.enumerate().map(decode, num_parallel_calls=tf.data.AUTOTUNE)


def _augments_on_cpu(cfg: InputConfig, training: bool) -> bool:
    """True when decoding applies the augmentation recipe and the backbone scaling (pipelines.cpu_augmentation)."""
    return training and not cfg.augment_on_device and cpu_augmentation.is_active(cfg.augment, cfg.augment_strength)


def _evaluation_examples(cfg: InputConfig, builder, split: str, examples: tf.data.Dataset,
                         input_context) -> tf.data.Dataset:
    decoded = examples.map(lambda example: {**example, "image": images.decode_center(example["image"],
                                                                                     cfg.image_size)},
                           num_parallel_calls=tf.data.AUTOTUNE)
    num_pipelines = input_context.num_input_pipelines if input_context else 1
    cached_bytes = builder.info.splits[split].num_examples / num_pipelines * cfg.image_size ** 2 * 3
    return decoded.cache() if cfg.cache_eval and cached_bytes <= EVAL_CACHE_BYTES else decoded


class _ModelInputs:
    """Turns a batch of decoded examples into what the model takes (a callable for Dataset.map)."""

    def __init__(self, cfg: InputConfig, builder, split: str, training: bool, with_file_names: bool,
                 pipeline_id: int):
        self.cfg, self.training, self.with_file_names = cfg, training, with_file_names
        self.scales = not cfg.augment_on_device and not _augments_on_cpu(cfg, training)
        self.num_classes = {rank: builder.info.features[rank].num_classes for rank in cfg.head_ranks}
        self.seed = tf.constant([cfg.seed + 1, pipeline_id], tf.int64)
        self.backbone = backbones.get_backbone(cfg.backbone)
        self.weights = None
        if training and cfg.class_weights != "none" and not with_file_names:
            weights = balancing.class_weights(reading.label_counts(cfg, split), cfg.class_weights,
                                              cfg.class_weight_beta)
            self.weights = tf.constant(balancing.weight_vector(weights, self.num_classes[cfg.label_rank]))

    def __call__(self, index, batch):
        cfg = self.cfg
        pixels = tf.cast(batch["image"], tf.float32)
        labels = {rank: tf.cast(batch[rank], tf.int32) for rank in cfg.head_ranks}
        if cfg.soft_labels:
            labels = {rank: tf.one_hot(ids, self.num_classes[rank]) for rank, ids in labels.items()}
        weights = None if self.weights is None else tf.gather(self.weights, batch[cfg.label_rank])
        if self.training and cfg.soft_labels:
            batch_seed = tf.random.experimental.stateless_fold_in(self.seed, index)
            targets = {"labels": labels} if weights is None else {"labels": labels, "weights": weights}
            pixels, targets = mixing.mix_batch(pixels, targets, batch_seed, cfg.mixup_alpha, cfg.cutmix_alpha)
            labels, weights = targets["labels"], targets.get("weights")
        if self.scales:
            pixels = self.backbone.preprocess(pixels)
        labels = labels if cfg.labels_as_dict else labels[cfg.label_rank]
        if self.with_file_names:
            return pixels, labels, batch["file_name"]
        return (pixels, labels) if weights is None else (pixels, labels, weights)


def _options(cfg: InputConfig, training: bool) -> tf.data.Options:
    options = tf.data.Options()
    # Evaluation keeps the stored order (cheap, and prediction tables come out the same every run).
    options.deterministic = cfg.deterministic or not training
    options.autotune.enabled = True
    options.experimental_optimization.map_parallelization = True
    options.experimental_optimization.parallel_batch = True
    # Sharding is done here (per file or per example, from the InputContext); tf.distribute must not redo it.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return options


def num_workers(strategy: tf.distribute.Strategy | None) -> int:
    """Processes training together: the chief and workers of a multi-worker cluster, else 1."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return 1
    jobs = resolver.cluster_spec().as_dict()
    return max(1, len(jobs.get("chief", [])) + len(jobs.get("worker", [])))
