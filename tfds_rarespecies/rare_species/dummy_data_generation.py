"""Regenerates the builder's embedded sample downloads (`dummy_data/`, `dummy_data_imageomics/`).

    python -m tfds_rarespecies.rare_species.dummy_data_generation --metadata=METADATA.csv --taxonomy=TAXONOMY.csv

Real metadata rows of a few families, small synthetic images (see replica.py), and in the course sample one
file of each kind a real download holds besides clean JPEGs: a grayscale JPEG, PNG bytes behind a .jpg name,
a truncated file (skipped), a row whose file is missing, and a file no row names. The test suite and `make demo`
build from these samples; their expected counts live in tests/builder/test_builder.py.
"""

import pathlib
import shutil

import numpy as np
import pandas as pd
from absl import app, flags
from PIL import Image

from tfds_rarespecies import replica

_METADATA = flags.DEFINE_string("metadata", "tests/data/rare_species_metadata.csv", "Real course metadata.csv.")
_TAXONOMY = flags.DEFINE_string("taxonomy", "tests/data/rare_species_taxonomy.csv", "Imageomics taxonomy CSV.")

HERE = pathlib.Path(__file__).parent
COURSE_FAMILIES = ("acroporidae", "unionidae", "apidae", "cheloniidae")
IMAGEOMICS_FAMILIES = ("carabidae", "bufonidae", "accipitridae")
PER_FAMILY = 12


def _rows(metadata: pd.DataFrame, families: tuple[str, ...]) -> pd.DataFrame:
    frame = metadata[metadata["family"].isin(families)].sort_values(["family", "rare_species_id"])
    return frame.groupby("family", group_keys=False).head(PER_FAMILY).reset_index(drop=True)


def _make_course(metadata: pd.DataFrame, taxonomy: pd.DataFrame) -> None:
    out = HERE / "dummy_data"
    shutil.rmtree(out, ignore_errors=True)
    rows = _rows(metadata, COURSE_FAMILIES)
    replica.write_replica(out, rows, "course", taxonomy, min_side=96, max_side=200, seed=1)
    paths = [out / p for p in rows["file_path"]]
    Image.open(paths[0]).convert("L").save(paths[0], "JPEG")
    Image.open(paths[PER_FAMILY]).save(paths[PER_FAMILY], "PNG")
    data = paths[2 * PER_FAMILY].read_bytes()
    paths[2 * PER_FAMILY].write_bytes(data[: len(data) // 2])
    paths[3 * PER_FAMILY].unlink()
    unnamed = out / "chordata_cheloniidae" / "0_0_eol-full-size-copy.jpg"
    replica.family_pattern("cheloniidae", 120, 100, np.random.default_rng(0)).save(unnamed, "JPEG")


def _make_imageomics(metadata: pd.DataFrame, taxonomy: pd.DataFrame) -> None:
    out = HERE / "dummy_data_imageomics"
    shutil.rmtree(out, ignore_errors=True)
    rows = _rows(metadata, IMAGEOMICS_FAMILIES)
    replica.write_replica(out, rows, "imageomics", taxonomy, min_side=96, max_side=200, seed=2)
    replica.write_licenses(out, rows)


def main(argv):
    del argv
    metadata = pd.read_csv(_METADATA.value, dtype=str, keep_default_na=False)
    taxonomy = pd.read_csv(_TAXONOMY.value, dtype=str, keep_default_na=False)
    _make_course(metadata, taxonomy)
    _make_imageomics(metadata, taxonomy)


if __name__ == "__main__":
    app.run(main)
