"""The one replica download and built dataset every benchmark uses (shared by build, input, train and tune
benchmarks; not a benchmark itself).

A replica is real metadata rows (tests/data/rare_species_metadata.csv) with synthetic pixels written by
tfds_rarespecies.replica: JPEG quality 85, each side drawn uniformly from min_side..max_side, by default
400..2400 px like the real EOL full-size files (mean ~2 megapixels). A stamp file records how a replica was
made, so a later run with other sizes or counts rewrites it instead of silently reusing the wrong one.

    download = replica_data.write_download(work_dir / "download", num_images=600)
    data_dir = replica_data.build(download, work_dir / "data", "inception_342")
"""

import json
import math
import pathlib
import shutil

import numpy as np
import pandas as pd
from PIL import Image

from tfds_rarespecies import replica

METADATA = pathlib.Path(__file__).resolve().parents[1] / "tests" / "data" / "rare_species_metadata.csv"
STAMP = "replica.json"
FULL_SIZE = (400, 2400)  # side range of the real EOL full-size copies


def select(num_images: int | None = None, families: int | None = None, per_family: int | None = None,
           seed: int = 0) -> pd.DataFrame:
    """Real metadata rows: `families` x `per_family`, or about num_images as ~10 per family from up to all 202
    families (the split needs at least 3 images per family)."""
    if num_images is not None:
        families = max(1, min(202, num_images // 10))
        per_family = math.ceil(num_images / families)
    metadata = pd.read_csv(METADATA, dtype=str, keep_default_na=False)
    return replica.select_rows(metadata, families=families, per_family=per_family, seed=seed)


def write_download(folder: pathlib.Path, num_images: int | None = None, families: int | None = None,
                   per_family: int | None = None, min_side: int = FULL_SIZE[0], max_side: int = FULL_SIZE[1],
                   seed: int = 0, pixels: str = "family") -> pathlib.Path:
    """A course-layout replica download in folder, written unless one made the same way is already there;
    pixels: tfds_rarespecies.replica's kind ("family" patterns, or "taxonomy": sister families alike); the
    stamp names the pattern's version, so a replica written by an earlier pattern is written again."""
    folder = pathlib.Path(folder)
    stamp = {"num_images": num_images, "families": families, "per_family": per_family, "min_side": min_side,
             "max_side": max_side, "seed": seed,
             **({"pixels": pixels, "pixels_version": replica.PIXELS[pixels]} if pixels != "family" else {})}
    if _read_stamp(folder / STAMP) == stamp:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    replica.write_replica(folder, select(num_images, families, per_family, seed), "course", min_side=min_side,
                          max_side=max_side, seed=seed, pixels=pixels)
    (folder / STAMP).write_text(json.dumps(stamp))
    return folder


def build(download: pathlib.Path, data_dir: pathlib.Path, config: str = "inception_342") -> pathlib.Path:
    """data_dir holding rare_species/<config> built from download, reused only when built from this very
    replica (same stamp)."""
    import tensorflow_datasets as tfds  # noqa: PLC0415 (writing a replica needs no TensorFlow)

    import tfds_rarespecies  # noqa: PLC0415

    data_dir = pathlib.Path(data_dir)
    built_from = data_dir / f"{config}.{STAMP}"
    builder = tfds_rarespecies.Builder(config=config, data_dir=str(data_dir))
    if builder.is_prepared() and _read_stamp(built_from) == _read_stamp(download / STAMP):
        return data_dir
    shutil.rmtree(data_dir / "rare_species" / config, ignore_errors=True)
    builder = tfds_rarespecies.Builder(config=config, data_dir=str(data_dir))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(download)))
    built_from.write_text(json.dumps(_read_stamp(download / STAMP)))
    return data_dir


def describe(download: pathlib.Path) -> str:
    """Count, megapixels and bits per pixel of the replica's JPEGs, for the benchmark tables."""
    files = sorted(download.rglob(f"*{replica.FILE_SUFFIX}"))
    sizes = [Image.open(path).size for path in files]
    pixels = np.array([width * height for width, height in sizes], dtype=np.float64)
    long_sides = np.array([max(size) for size in sizes])
    bits = np.array([path.stat().st_size * 8 for path in files], dtype=np.float64)
    return (f"{len(files)} replica JPEGs (q85), sides {min(min(s) for s in sizes)}..{max(long_sides)} px, "
            f"median long side {np.median(long_sides):.0f} px, mean {pixels.mean() / 1e6:.2f} MP, "
            f"{bits.sum() / pixels.sum():.2f} bits/pixel")


def prepare(work_dir: pathlib.Path, num_images: int, min_side: int = FULL_SIZE[0],
            max_side: int = FULL_SIZE[1]) -> tuple[pathlib.Path, pathlib.Path]:
    """The full-size replica download and the data_dir with rare_species/inception_342 built from it."""
    work_dir = pathlib.Path(work_dir)
    download = write_download(work_dir / "download", num_images=num_images, min_side=min_side, max_side=max_side)
    return download, build(download, work_dir / "data", "inception_342")


def build_replica(work_dir: pathlib.Path, families: int = 20, per_family: int = 60,
                  config: str = "small_128", pixels: str = "family") -> str:
    """The data_dir of a replica built as rare_species/<config>, its download's sides just above the config's
    stored short side (up to ~2.3x it: small files, quick to write and build, every one resized when stored)."""
    import tfds_rarespecies  # noqa: PLC0415 (writing a replica needs no TensorFlow)

    stored = tfds_rarespecies.Builder.builder_configs[config].short_side
    work_dir = pathlib.Path(work_dir)
    name = f"data_{families}x{per_family}_{config}" + ("" if pixels == "family" else f"_{pixels}")
    download = write_download(work_dir / f"{name}_download", families=families, per_family=per_family,
                              min_side=stored + 2, max_side=round(stored * 2.35), pixels=pixels)
    return str(build(download, work_dir / name, config))


def _read_stamp(path: pathlib.Path) -> dict | None:
    """What a stamp file says; None when there is none (it is written last, so a stamp means complete)."""
    return json.loads(path.read_text()) if path.exists() else None
