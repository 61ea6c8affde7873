"""Input pipelines: from a built `rare_species` TFDS dataset to batches for `model.fit`, for any backbone.

Public API (everything the trainer needs; the modules hold one concern each):

    cfg = InputConfig.for_backbone("efficientnetb0", data_dir, batch_size=32, augment="recipe")
    train = make_dataset(cfg, "train", training=True, strategy=strategy)      # infinite, global batches
    val = make_dataset(cfg, "validation", training=False, strategy=strategy)  # finite, each example once
    model.fit(train, steps_per_epoch=steps_per_epoch(cfg, "train", strategy.num_replicas_in_sync),
              validation_data=val, ...)

- `InputConfig` (config): the plain frozen config; `.soft_labels` says whether labels are one-hot.
- `make_dataset(cfg, split, training, strategy=None, input_context=None, with_file_names=False)` (datasets):
  (images, labels[, sample_weights]) batches; global batches for Keras' own distribution on one worker, or
  per-replica batches of one input pipeline's shard given an InputContext.
- `distributed_dataset(strategy, cfg, split, training, with_file_names=False)` (datasets): the same through
  `strategy.distribute_datasets_from_function`; required for multi-worker, accepted by fit/evaluate.
- `steps_per_epoch(cfg, split="train", num_replicas=1)` (datasets): global batches per epoch.
- `num_workers(strategy)` (datasets): processes training together (the multi-worker cluster's size, else 1).
- `model_front_layers(cfg)` (model_front): augmentation + the backbone's scaling layer for the front of the
  model when `cfg.augment_on_device`; empty otherwise. `BackboneScaling`: the scaling layer of model.keras
  files written before 2026-12-06, registered so they still load.
- `augmentation_layers(name, strength=1.0, seed=0)` (augmentation): the Keras layers of a named recipe.
- `dataset_info(cfg) -> DatasetInfo` (reading): examples per split, each rank's names, the dataset's tree.
- `label_counts(cfg, split="train", rank="")` (reading): examples per label id at a rank (cfg.label_rank by
  default), from one pass over the labels and JPEG
  headers (which also sizes the training cache), cached per process.
- `class_weights(counts, scheme, beta=0.999) -> dict[int, float]` (balancing): for Keras' class_weight.
- `cached_features(model, weights_id, cfg, split, cache_dir) -> Features` (features): frozen-backbone
  embeddings cached on disk; `Features.dataset(batch_size)` feeds a head; `weights_id(weights, seed)` names
  the weights in the cache key (the one definition the trainer and the audit share); `weights_digest(path)`
  hashes a weights file or keras-hub preset directory (also trained_on.json's identity).
- `get_backbone(name)`, `BACKBONES` (backbones): the one per-backbone table; `Backbone.preprocess(images)`
  scales 0..255 images in tf.data, `Backbone.scaling_layer()` is the same scaling as a standard
  `keras.layers.Rescaling` for the front of a saved model.
- `DatasetNotBuiltError` (reading): raised with the `tfds build` command to run.
"""

from pipelines.augmentation import augmentation_layers
from pipelines.backbones import BACKBONES, get_backbone
from pipelines.balancing import class_weights
from pipelines.config import InputConfig
from pipelines.datasets import distributed_dataset, make_dataset, num_workers, steps_per_epoch
from pipelines.features import Features, cached_features, weights_digest, weights_id
from pipelines.model_front import BackboneScaling, model_front_layers
from pipelines.reading import DatasetInfo, DatasetNotBuiltError, dataset_info, label_counts

__all__ = [
    "BACKBONES", "BackboneScaling", "DatasetInfo", "DatasetNotBuiltError", "Features", "InputConfig",
    "augmentation_layers", "cached_features", "class_weights", "dataset_info", "distributed_dataset",
    "get_backbone", "label_counts", "make_dataset", "model_front_layers", "num_workers", "steps_per_epoch",
    "weights_digest", "weights_id",
]
