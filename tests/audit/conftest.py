"""A generated dataset with planted problems, built through the real builder, shared by the audit tests.

Five families x 25 generated images (each family its own colour and stripe direction); in every family one
image is overwritten by a text page, one by a flat colour fill, one by another family's pattern (a
mislabel), and one file is copied over another (a duplicate pair).
"""

import contextlib
import dataclasses
import io
import pathlib
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.audit.pictures import text_page
from tests.conftest import build, tiny_rows
from tfds_rarespecies import replica
from trainer import cli
from trainer.auditing import settings
from trainer.auditing.run import run

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


def audit(planted: Planted, out: pathlib.Path, *flags: str, embedder=None) -> tuple[pd.DataFrame, str]:
    """Runs the audit from command-line flags (parsed like `python -m trainer.audit`), with the given embedder
    or the one the flags name; returns the scores (by rare_species_id) and the printed summary."""
    config = cli.parse([f"--data_dir={planted.data_dir}", "--config=small_128", f"--out={out}", *flags],
                       settings.AuditConfig, program="trainer.audit")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        scores = run(config, embedder)
    return scores.set_index("rare_species_id"), printed.getvalue()


def duplicate_table() -> pd.DataFrame:
    """Identity and hash columns of seven images: a leak (a, b), a near copy in one split (c, d), a label
    conflict (e, f) and an image sharing c's hash in another family (g), which is no copy."""
    return pd.DataFrame([
        ("a", "a.jpg", "bovidae", "train", "s1", "0000000000000000"),
        ("b", "b.jpg", "bovidae", "test", "s1", "0000000000000000"),          # exact copy of a, other split
        ("c", "c.jpg", "bovidae", "train", "s2", "ffff0000ffff0000"),
        ("d", "d.jpg", "bovidae", "train", "s3", "ffff0000ffff0001"),          # near copy of c, same split
        ("e", "e.jpg", "apidae", "validation", "s4", "0f0f0f0f0f0f0f0f"),
        ("f", "f.jpg", "cheloniidae", "validation", "s4", "0f0f0f0f0f0f0f0f"),  # same bytes, other family
        ("g", "g.jpg", "apidae", "train", "s5", "ffff0000ffff0000"),           # c's hash, other family
    ], columns=["rare_species_id", "file_name", "family", "split", "content_sha256", "phash"])


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
