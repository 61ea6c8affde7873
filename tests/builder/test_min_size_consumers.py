"""The smallest image a build stores (the config's min_side) is one every consumer takes: the pipelines'
training and evaluation views and the audit's per-image statistics and embedders run on a dataset made of
images exactly at the minimum (square, tall and wide), and the build skips anything smaller as too_small."""

import io
import pathlib

import numpy as np
import pandas as pd
import pytest
import tensorflow_datasets as tfds
from PIL import Image

import pipelines
import tfds_rarespecies
from tests.conftest import build, tiny_rows
from tfds_rarespecies import replica, report
from trainer.auditing import embedders
from trainer.auditing import scores as audit_scores
from trainer.auditing.settings import AuditConfig

MIN_SIDE = tfds_rarespecies.RareSpeciesConfig(name="probe").min_side


def _jpeg(size: tuple[int, int], seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=90)
    return out.getvalue()


@pytest.fixture(scope="module")
def minimum_data_dir(tmp_path_factory, real_metadata) -> str:
    """small_128 built from 4 families x 5 images at exactly MIN_SIDE (square, tall, wide in turn), plus one
    image a pixel under it, which the build skips."""
    root = tmp_path_factory.mktemp("minimum")
    rows = tiny_rows(real_metadata, per_family=6)
    download = replica.write_replica(root / "download", rows, "course", min_side=MIN_SIDE, max_side=MIN_SIDE)
    shapes = [(MIN_SIDE, MIN_SIDE), (MIN_SIDE, 3 * MIN_SIDE), (3 * MIN_SIDE, MIN_SIDE)]
    for i, path in enumerate(rows["file_path"]):
        size = (MIN_SIDE - 1, 2 * MIN_SIDE) if i == 0 else shapes[i % 3]
        (download / path).write_bytes(_jpeg(size, i))
    builder = build(download, root / "data")
    statuses = pd.read_csv(pathlib.Path(builder.data_dir) / report.CSV_NAME, dtype=str, keep_default_na=False)
    assert statuses["reason"].tolist().count("too_small") == 1 and (statuses["status"] == "written").sum() == 23
    return str(root / "data")


def _stored_sides(data_dir: str) -> set[int]:
    builder = tfds.builder("rare_species", config="small_128", data_dir=data_dir)
    return {min(example["image"].shape[:2]) for split in ("train", "validation", "test")
            for example in tfds.as_numpy(builder.as_dataset(split=split))}


def test_every_stored_image_is_exactly_at_the_minimum(minimum_data_dir):
    assert _stored_sides(minimum_data_dir) == {MIN_SIDE}


@pytest.mark.parametrize("augment_on_device", [False, True])
def test_the_training_view_takes_the_minimum(minimum_data_dir, augment_on_device):
    cfg = pipelines.InputConfig.for_backbone("baseline_cnn", minimum_data_dir, batch_size=8, augment="recipe",
                                             augment_on_device=augment_on_device, dataset_config="small_128")
    for images, labels in pipelines.make_dataset(cfg, "train", training=True).take(4):
        assert images.shape == (8, cfg.image_size, cfg.image_size, 3) and np.isfinite(images.numpy()).all()
        assert labels.shape == (8,)


def test_the_evaluation_view_takes_the_minimum(minimum_data_dir):
    cfg = pipelines.InputConfig.for_backbone("mobilenetv2", minimum_data_dir, batch_size=8,
                                             dataset_config="small_128")
    for split in ("train", "validation", "test"):
        seen = 0
        for images, _ in pipelines.make_dataset(cfg, split, training=False):
            assert images.shape[1:] == (224, 224, 3) and np.isfinite(images.numpy()).all()
            seen += images.shape[0]
        assert seen == pipelines.dataset_info(cfg).num_examples[split]


def test_the_audit_statistics_and_embedders_take_the_minimum(minimum_data_dir, tmp_path):
    builder = tfds.builder("rare_species", config="small_128", data_dir=minimum_data_dir)
    colours, rows = embedders.ColourStats(), []
    for split in ("train", "validation", "test"):
        for example in tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)):
            statistics = audit_scores.image_statistics(example["image"])
            assert all(np.isfinite(value) for value in statistics.values())
            colours.add(example["image"])
            rows.append({"file_name": example["file_name"].decode(), "split": split})
    table = pd.DataFrame(rows)
    assert np.isfinite(colours.embeddings(table)).all() and colours.embeddings(table).shape == (23, 72)
    config = AuditConfig(data_dir=minimum_data_dir, dataset_config="small_128", embedder="backbone",
                         backbone="baseline_cnn", weights="none", out=str(tmp_path), batch_size=8)
    embedded = embedders.make(config).embeddings(table)
    assert embedded.shape[0] == 23 and np.isfinite(embedded).all() and (np.abs(embedded).sum(axis=1) > 0).all()
