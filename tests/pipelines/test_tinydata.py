"""A stand-in for the rare_species builder, with its feature dict, on solid-colour images: the pipeline tests'
dataset (fixture `tiny_data_dir_standin`, imported by the other test_pipelines_* modules).

conftest's `tiny_data_dir` (the real builder) cannot give what these tests control: each family here has its
own solid colour, so a test reads an image's label back from its pixels after augmentation or mixing; family
counts are imbalanced (as the real ones are) for the sampling tests; and every split has several files, so
file-level sharding is exercised (the real tiny build has one file per split: see
test_pipelines_builder_contract).
"""

import io

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

import tfds_rarespecies
from tfds_rarespecies import labels

NAME = "rare_species_tiny"
CONFIG = "small_128"
COLOURS = {
    "acroporidae": (200, 30, 30),
    "apidae": (30, 180, 40),
    "cheloniidae": (30, 40, 200),
    "unionidae": (220, 210, 40),
}
COUNTS = {"train": (24, 12, 6, 4), "validation": (3, 3, 2, 3), "test": (2, 2, 2, 2)}
NUM_SHARDS = 3


FAMILIES = list(labels.families())
FAMILY_IDS = [FAMILIES.index(family) for family in COLOURS]


def features_dict() -> tfds.features.FeaturesDict:
    """The feature dict of BUILD-notes.md, field for field."""
    text = tfds.features.Text()
    return tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
        "file_name": text,
        "rare_species_id": text,
        "eol_content_id": np.int64,
        "eol_page_id": np.int64,
        "kingdom": tfds.features.ClassLabel(names=["animalia"]),
        **{rank: tfds.features.ClassLabel(names=labels.names(rank)) for rank in labels.RANKS},
        **{name: text for name in ("common_name", "license_name", "copyright_owner", "source_url")},
        "original_width": np.int32,
        "original_height": np.int32,
        "content_sha256": text,
        "phash": text,
    })


def first_species(family: str) -> dict[str, str]:
    """The six ranks of the family's first species in the shipped taxonomy."""
    tree = labels.taxonomy().sort_values("species")
    return tree.loc[tree["family"] == family, list(labels.RANKS)].iloc[0].to_dict()


def solid_jpeg(colour, width: int, height: int, rng: np.random.Generator) -> bytes:
    pixels = np.clip(np.array(colour, np.float32) + rng.normal(0, 4, (height, width, 3)), 0, 255)
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


class _TinyRareSpecies(tfds.core.GeneratorBasedBuilder):
    """rare_species_tiny: 4 families of solid-colour images, 40..72 px, COUNTS per split."""

    name = NAME
    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=CONFIG)]

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(features=features_dict(), supervised_keys=("image", "family"))

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(split) for split in COUNTS}

    def _generate_examples(self, split: str):
        rng = np.random.default_rng(len(split))
        for (family, colour), count in zip(COLOURS.items(), COUNTS[split]):
            for index in range(count):
                width, height = (int(side) for side in rng.integers(40, 73, size=2))
                file_name = f"{split}_{family}_{index}_eol-full-size-copy.jpg"
                yield file_name, {
                    "image": io.BytesIO(solid_jpeg(colour, width, height, rng)), "file_name": file_name,
                    "rare_species_id": f"{family}-{index}", "eol_content_id": index, "eol_page_id": index,
                    "kingdom": "animalia", **first_species(family),
                    **{name: "" for name in ("common_name", "license_name", "copyright_owner", "source_url",
                                             "content_sha256", "phash")},
                    "original_width": width, "original_height": height,
                }


def build_tiny(data_dir) -> str:
    builder = _TinyRareSpecies(config=CONFIG, data_dir=str(data_dir))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(num_shards=NUM_SHARDS))
    return str(data_dir)


@pytest.fixture(scope="session")
def tiny_data_dir_standin(tmp_path_factory) -> str:
    return build_tiny(tmp_path_factory.mktemp("rare_species_tiny"))


def test_standin_has_the_real_builders_features(tmp_path):
    """Keeps the stand-in honest: same keys, types and label names as the real builder declares."""
    real = tfds_rarespecies.Builder(config=CONFIG, data_dir=str(tmp_path)).info.features
    assert repr(real) == repr(features_dict())


def test_standin_splits_have_several_files(tiny_data_dir_standin):
    builder = tfds.builder(NAME, config=CONFIG, data_dir=tiny_data_dir_standin)
    assert {name: len(split.file_instructions) for name, split in builder.info.splits.items()} == {
        "train": NUM_SHARDS, "validation": NUM_SHARDS, "test": NUM_SHARDS}
    assert {name: split.num_examples for name, split in builder.info.splits.items()} == {
        split: sum(counts) for split, counts in COUNTS.items()}
