"""The trainer's side of the pipelines: Config -> InputConfig, datasets for the strategy, cached embeddings.

Every batch comes from `pipelines` (the one input pipeline); this module only translates the training config
into the pipelines' config and picks the calls that work under the run's strategy.
"""

import dataclasses
import os
import pathlib

import tensorflow as tf

import pipelines
from pipelines import balancing
from trainer.training.config import Config, ConfigError


def input_config(config: Config, oversample_labels: tuple[str, ...] = ()) -> pipelines.InputConfig:
    return pipelines.InputConfig(
        data_dir=os.path.expanduser(config.data_dir), dataset_config=config.dataset, backbone=config.backbone,
        image_size=config.input_size, batch_size=config.batch_size, augment=config.augment,
        augment_strength=config.augment_strength, augment_on_device=config.augment_on_device,
        mixup_alpha=config.mixup_alpha, cutmix_alpha=config.cutmix_alpha,
        sampling_temperature=config.sampling_temperature, oversample_labels=oversample_labels,
        oversample_extra_views=config.oversample_extra_views, class_weights=config.class_weights,
        class_weight_beta=config.class_weight_beta, label_rank=config.label_rank, heads=config.head_ranks,
        train_cache_bytes=int(config.train_cache_gib * (1 << 30)), deterministic=config.deterministic,
        seed=config.seed)


def evaluation_view(cfg: pipelines.InputConfig) -> pipelines.InputConfig:
    """The input a saved model.keras is judged on: every example once, no augmentation, float 0..255 images
    (the model scales them itself) and plain ids at the label rank; train.run's final evaluation and
    trainer.evaluate both read it."""
    return dataclasses.replace(cfg, augment="none", augment_on_device=True, mixup_alpha=0.0, cutmix_alpha=0.0,
                               heads=(), class_weights="none", oversample_labels=(),
                               sampling_temperature=1.0)


def dataset_info(config: Config) -> pipelines.DatasetInfo:
    """The built dataset's sizes and label names; a missing build is a ConfigError naming the command."""
    try:
        return pipelines.dataset_info(input_config(config))
    except pipelines.DatasetNotBuiltError as error:
        raise ConfigError(f"--data_dir={config.data_dir} --dataset_config={config.dataset}: {error}") from None


def dataset(strategy: tf.distribute.Strategy, cfg: pipelines.InputConfig, split: str, training: bool):
    """On one machine, global batches (batch_size x replicas) that Keras splits evenly across the replicas;
    under a multi-worker strategy, each worker's own shard in per-replica batches.

    One machine does not use pipelines' per-replica form (distribute_datasets_from_function): it hands whole
    per-replica batches to the replicas in turn, so a split smaller than two batches starts with an uneven step,
    from which Keras 3 cannot build a model (it averages the first batch across replicas). Several workers must
    use it (each reads only its shard; a worker out of evaluation data steps on empty batches until all are),
    and build from their first local batch instead (distribute.patch_keras_multi_worker). Evaluation batches
    on one machine are evened out across the replicas (even_across_replicas).
    """
    if pipelines.num_workers(strategy) > 1:
        return pipelines.distributed_dataset(strategy, cfg, split, training)
    batches = pipelines.make_dataset(cfg, split, training, strategy=strategy)
    return batches if training else even_across_replicas(batches, strategy.num_replicas_in_sync)


def even_across_replicas(batches: tf.data.Dataset, replicas: int) -> tf.data.Dataset:
    """Each evaluation batch grown to a multiple of the replicas by repeating its first examples, so no replica
    gets an empty or a smaller share: a split's last batch (or a split smaller than the global batch) would
    otherwise leave a replica with an empty batch, which Keras cannot build from (uneven shapes do not average)
    and oneDNN's CPU kernels refuse. At most replicas - 1 examples a split count twice in the per-epoch
    validation figures; the run's final figures (train.py's plain loop) see every example once."""
    if replicas == 1:
        return batches

    def even(*batch):
        count = tf.shape(tf.nest.flatten(batch)[0])[0]
        rows = tf.range(count + (-count) % replicas) % count
        return tf.nest.map_structure(lambda values: tf.gather(values, rows), batch)

    return batches.map(even, num_parallel_calls=tf.data.AUTOTUNE)


def embedding_dataset(features: pipelines.Features, cfg: pipelines.InputConfig, split: str, global_batch_size: int,
                      training: bool) -> tf.data.Dataset:
    """Cached embeddings shaped like the image batches: (embeddings, labels[, sample_weights]); training
    batches repeat forever (the caller passes steps_per_epoch, as for images) and carry the class weights
    pipelines gives images."""
    batches = features.dataset(global_batch_size, heads=cfg.head_ranks, shuffle_seed=cfg.seed if training else None)
    if not training:
        return batches
    batches = batches.repeat()
    if cfg.class_weights == "none":
        return batches
    counts = pipelines.label_counts(cfg, split)
    weights = pipelines.class_weights(counts, cfg.class_weights, cfg.class_weight_beta)
    table = tf.constant(balancing.weight_vector(weights, len(counts)))

    def with_weights(embeddings, labels):
        ids = labels[cfg.label_rank] if cfg.labels_as_dict else labels
        return embeddings, labels, tf.gather(table, ids)

    return batches.map(with_weights, num_parallel_calls=tf.data.AUTOTUNE)


def feature_cache_dir(config: Config) -> pathlib.Path:
    return pathlib.Path(os.path.expanduser(config.feature_cache_dir or os.path.join(config.model_dir, "features")))

