"""A generated dataset with planted problems, built through the real builder, shared by the audit tests.

Five families x 25 generated images (each family its own colour and stripe direction); in every family one
image is overwritten by a text page, one by a flat colour fill, one by another family's pattern (a
mislabel), and one file is copied over another (a duplicate pair).
"""

import dataclasses
import pathlib
import shutil

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.conftest import build, tiny_rows
from tfds_rarespecies import replica

FAMILIES = ("acroporidae", "apidae", "bovidae", "cheloniidae", "unionidae")
PER_FAMILY = 25


@dataclasses.dataclass(frozen=True)
class Planted:
    """The download, its build and the rare_species_ids of what was planted (the second of each duplicate pair
    is the copy)."""

    download: pathlib.Path
    data_dir: pathlib.Path
    text: list[str]
    flat: list[str]
    mislabelled: list[str]
    duplicate_pairs: list[tuple[str, str]]

    @property
    def non_photos(self) -> set[str]:
        return set(self.text) | set(self.flat)

    @property
    def problems(self) -> set[str]:
        return self.non_photos | set(self.mislabelled) | {b for _, b in self.duplicate_pairs}


def text_page(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """A scanned page: near-white paper with lines of black text."""
    page = Image.new("RGB", (width, height), (250, 250, 246))
    draw = ImageDraw.Draw(page)
    for top in range(8, height - 12, 12):
        draw.text((6, top), "".join(rng.choice(list("abcdefghij klmnopqrstuvwxyz"), 40)), fill=(10, 10, 10))
    return page


@pytest.fixture(scope="package")
def planted(tmp_path_factory, real_metadata, real_taxonomy) -> Planted:
    root = tmp_path_factory.mktemp("audit")
    rows = tiny_rows(real_metadata, families=FAMILIES, per_family=PER_FAMILY)
    download = replica.write_replica(root / "download", rows, "course", real_taxonomy, min_side=130, max_side=200)
    rng = np.random.default_rng(7)
    text, flat, mislabelled, pairs = [], [], [], []
    for index, family in enumerate(FAMILIES):
        members = rows[rows["family"] == family]
        path = {row.rare_species_id: download / row.file_path for row in members.itertuples()}
        ids = list(path)
        text_page(170, 150, rng).save(path[ids[1]], quality=85)
        Image.new("RGB", (160, 140), tuple(int(c) for c in rng.integers(0, 256, 3))).save(path[ids[3]], quality=85)
        other_family = FAMILIES[(index + 2) % len(FAMILIES)]
        replica.family_pattern(other_family, 150, 170, rng).save(path[ids[5]], quality=85)
        shutil.copyfile(path[ids[7]], path[ids[8]])
        text.append(ids[1])
        flat.append(ids[3])
        mislabelled.append(ids[5])
        pairs.append((ids[7], ids[8]))
    build(download, root / "data")
    return Planted(download, root / "data", text, flat, mislabelled, pairs)
