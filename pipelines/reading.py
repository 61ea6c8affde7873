"""Reading the built TFDS dataset: its builder, the raw examples one input pipeline reads, its label counts.

Pipelines read only what `tfds build` wrote (dataset_info.json and the TFRecords), never the download.
Importing `tfds_rarespecies` (for its label classes) also registers `rare_species`. The image
stays JPEG bytes (SkipDecoding) so the parallel map decodes it, cropping while it decodes (pipelines.images);
of the other features only the labels and the file name are parsed (PartialDecoding).
"""

import dataclasses
import functools

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

import tfds_rarespecies.labels
from pipelines.config import InputConfig

FEATURES_READ = ("image", "file_name", *tfds_rarespecies.labels.RANKS)
MAX_INTERLEAVED_FILES = 16


class DatasetNotBuiltError(FileNotFoundError):
    """The dataset/config is not prepared in data_dir."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the trainer needs to know about the built dataset.

    Attributes:
      full_name: "name/config/version", part of every cache key.
      num_examples: examples per split.
      names: each rank's ClassLabel names; label ids index them.
      taxonomy: the tree the build stored in its metadata (labels.METADATA_KEY): the shipped one, or the
        download's own (labels="from_metadata"); a dataset without it was built before the builder stored it,
        with the shipped one.
      split_digests: per split, the build report's digest of its file names (empty for a dataset built before
        the report held them): a run records them to refuse a resume on other splits.
    """

    full_name: str
    num_examples: dict[str, int]
    names: dict[str, tuple[str, ...]]
    taxonomy: tfds_rarespecies.labels.Taxonomy
    split_digests: dict[str, str] = dataclasses.field(default_factory=dict)


def load_builder(cfg: InputConfig) -> tfds.core.DatasetBuilder:
    """The prepared builder, or one error line naming the command that builds it; opened once per dataset
    (name, config, data_dir) and process, however many pipelines, counts and caches ask for it."""
    return _prepared_builder(cfg.dataset_name, cfg.dataset_config, cfg.data_dir)


@functools.cache
def _prepared_builder(dataset_name: str, dataset_config: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
    where = data_dir or "the default TFDS data_dir"
    try:
        builder = tfds.builder(dataset_name, config=dataset_config, data_dir=data_dir)
        prepared = builder.is_prepared()
    except tfds.core.registered.DatasetNotFoundError:
        prepared = False
    except ValueError:  # TFDS knows no config of that name: neither shipped nor built in data_dir
        shipped = ", ".join(tfds.builder_cls(dataset_name).builder_configs)
        raise DatasetNotBuiltError(f"{dataset_name} has no config {dataset_config}, neither shipped ({shipped}) "
                                   f"nor built in {where}: choose one of those or build it") from None
    if not prepared:
        raise DatasetNotBuiltError(
            f"{dataset_name}/{dataset_config} is not built in {where}: run `tfds build {dataset_name} "
            f"--imports=tfds_rarespecies --config={dataset_config} "
            f"--manual_dir=DOWNLOAD_DIR --data_dir={data_dir or '~/tensorflow_datasets'}`")
    return builder


def read_examples(builder: tfds.core.DatasetBuilder, split: str, training: bool, seed: int,
                  input_context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
    """Undecoded examples {image: JPEG bytes, family, phylum, file_name} of this input pipeline's shard.

    With several input pipelines each reads a disjoint part: whole files when the split has at least one
    file per pipeline (TFDS shards the file list before shuffling it), otherwise an even slice of the examples
    (tfds.even_splits), so the shards never depend on the read order.
    Training shuffles the file order (seeded, anew each epoch).
    """
    num_pipelines = input_context.num_input_pipelines if input_context else 1
    by_file = num_pipelines > 1 and len(builder.info.splits[split].file_instructions) >= num_pipelines
    if num_pipelines > 1 and not by_file:
        split = tfds.even_splits(split, num_pipelines)[input_context.input_pipeline_id]
    num_files = len(builder.info.splits[split].file_instructions)
    read_config = tfds.ReadConfig(
        input_context=input_context if by_file else None,
        shuffle_seed=seed,
        interleave_cycle_length=min(num_files, MAX_INTERLEAVED_FILES),
        try_autocache=False)  # evaluation caches decoded images itself; raw records would be a second copy
    decoders = tfds.decode.PartialDecoding({name: True for name in FEATURES_READ},
                                           decoders={"image": tfds.decode.SkipDecoding()})
    return builder.as_dataset(split=split, shuffle_files=training, read_config=read_config, decoders=decoders)


def label_counts(cfg: InputConfig, split: str = "train", rank: str = "") -> np.ndarray:
    """Examples per label id at the rank (default cfg.label_rank; length = number of its names) in the split;
    refuses a split with images the rank cannot name (-1: outside the dataset's tree), which no head can learn."""
    rank = rank or cfg.label_rank
    ids = _split_census(cfg.dataset_name, cfg.dataset_config, cfg.data_dir, split)[0][rank]
    unplaced = int((ids < 0).sum())
    if unplaced:
        raise ValueError(f"{unplaced} of the {len(ids)} {split} images of {cfg.dataset_name}/{cfg.dataset_config} "
                         f"have no {rank} (outside the dataset's taxonomy: see the build report): train at a rank "
                         f"they have (--label_rank, --heads) or exclude them and rebuild")
    return np.bincount(ids, minlength=len(dataset_info(cfg).names[rank]))


def stored_pixels(cfg: InputConfig, split: str) -> int:
    """Pixels of the split's stored images, read from their JPEG headers (sizes the training-image cache)."""
    return _split_census(cfg.dataset_name, cfg.dataset_config, cfg.data_dir, split)[1]


def label_ids(cfg: InputConfig, names) -> list[int]:
    """Label ids of names at cfg.label_rank, with an error naming any unknown one."""
    known = {name: index for index, name in enumerate(dataset_info(cfg).names[cfg.label_rank])}
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ValueError(f"unknown {cfg.label_rank} names {', '.join(unknown)}: not in {cfg.dataset_name}'s "
                         f"{cfg.label_rank} list")
    return [known[name] for name in names]


def dataset_info(cfg: InputConfig) -> DatasetInfo:
    """The built dataset's sizes and label names, read from the one opened builder."""
    builder = load_builder(cfg)
    stored = (builder.info.metadata or {}).get(tfds_rarespecies.labels.METADATA_KEY)
    return DatasetInfo(
        full_name=builder.info.full_name,
        num_examples={name: split.num_examples for name, split in builder.info.splits.items()},
        names={rank: tuple(builder.info.features[rank].names) for rank in tfds_rarespecies.labels.RANKS},
        taxonomy=(tfds_rarespecies.labels.Taxonomy.from_text(stored) if stored
                  else tfds_rarespecies.labels.shipped()),
        split_digests=dict((builder.info.metadata or {}).get("build_report", {}).get("split_digests", {})))


@functools.cache
def _split_census(dataset_name: str, dataset_config: str, data_dir: str | None,
                  split: str) -> tuple[dict[str, np.ndarray], int]:
    """The label id at every rank of every example of the split and the total pixels of its stored images (from
    the JPEG headers), in one pass over the records; cached per process."""
    ranks = tfds_rarespecies.labels.RANKS
    builder = _prepared_builder(dataset_name, dataset_config, data_dir)
    columns = builder.as_dataset(split=split, read_config=tfds.ReadConfig(try_autocache=False),
                                 decoders=tfds.decode.PartialDecoding({"image": True, **dict.fromkeys(ranks, True)},
                                                                      decoders={"image": tfds.decode.SkipDecoding()}))
    columns = columns.map(lambda example: ({rank: example[rank] for rank in ranks}, tf.reduce_prod(
        tf.cast(tf.image.extract_jpeg_shape(example["image"])[:2], tf.int64))), num_parallel_calls=tf.data.AUTOTUNE)
    ids, pixels = {rank: [np.zeros(0, np.int64)] for rank in ranks}, 0
    for labels, count in columns.batch(8192).as_numpy_iterator():
        for rank in ranks:
            ids[rank].append(labels[rank])
        pixels += int(count.sum())
    return {rank: np.concatenate(parts).astype(np.int64) for rank, parts in ids.items()}, pixels
