"""The rare_species builder end to end: both layouts, the build report, metadata errors, zip, CLI."""

import hashlib
import pathlib
import shutil
import subprocess
import sys
import zipfile

import pandas as pd
import pytest
import tensorflow_datasets as tfds

import tfds_rarespecies
from tests.builder.test_config_fields import tfds_build
from tests.conftest import build, tiny_rows
from tfds_rarespecies import catalog, replica, report

BUILDER_DIR = pathlib.Path(tfds_rarespecies.__file__).parent / "rare_species"
COURSE_SAMPLE = BUILDER_DIR / "dummy_data"
IMAGEOMICS_SAMPLE = BUILDER_DIR / "dummy_data_imageomics"


class CourseLayoutTest(tfds.testing.DatasetBuilderTestCase):
    """The embedded course sample: 4 families x 12 rows; one truncated file and one missing file."""

    DATASET_CLASS = tfds_rarespecies.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["small_128"]
    SPLITS = {"train": 38, "validation": 4, "test": 4}
    SKIP_CHECKSUMS = True


class SpeciesDisjointTest(CourseLayoutTest):
    """The same sample split by species: acroporidae and apidae (5 species each) and unionidae (2) keep their
    validation/test species out of train; cheloniidae (1 species) falls back to the stratified split."""

    BUILDER_CONFIG_NAMES_TO_TEST = ["small_128_species_disjoint"]
    SPLITS = {"train": 34, "validation": 7, "test": 5}


class ImageomicsLayoutTest(tfds.testing.DatasetBuilderTestCase):
    """The embedded Imageomics sample: 3 families x 12 images with licenses.csv (md5 checked)."""

    DATASET_CLASS = tfds_rarespecies.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["small_128"]
    EXAMPLE_DIR = str(IMAGEOMICS_SAMPLE)
    SPLITS = {"train": 30, "validation": 3, "test": 3}
    SKIP_CHECKSUMS = True


def _report(builder) -> pd.DataFrame:
    return pd.read_csv(pathlib.Path(builder.data_dir) / report.CSV_NAME, dtype=str, keep_default_na=False)


def test_course_sample_accounts_for_every_row(tmp_path):
    builder = build(COURSE_SAMPLE, tmp_path)
    rows = _report(builder)
    metadata = pd.read_csv(COURSE_SAMPLE / "metadata.csv", dtype=str)
    assert len(rows) == len(metadata) == 48
    assert rows["status"].value_counts().to_dict() == {"written": 46, "skipped": 1, "missing": 1}
    assert rows.loc[rows["status"] == "skipped", "reason"].tolist() == ["truncated"]
    summary = builder.info.metadata["build_report"]
    assert summary["unnamed_files"] == 1
    assert sum(summary["splits"].values()) == 46
    example = next(iter(tfds.as_numpy(builder.as_dataset(split="train").take(1))))
    assert example["image"].shape[2] == 3 and min(example["image"].shape[:2]) <= 128
    assert example["genus"] and example["species"] and example["common_name"]
    assert b"/" not in example["file_name"]


def test_imageomics_sample_fills_taxonomy_and_licenses(tmp_path):
    builder = build(IMAGEOMICS_SAMPLE, tmp_path)
    example = next(iter(tfds.as_numpy(builder.as_dataset(split="train").take(1))))
    assert example["license_name"] == b"cc-by-nc 3.0"
    names = builder.info.features
    assert all(example[rank] >= 0 for rank in ("class", "order", "genus", "species"))
    assert " " in names["species"].int2str(example["species"])
    assert example["original_width"] >= 96


def test_exclusions_are_removed_and_reported(tmp_path):
    manual = tmp_path / "download"
    shutil.copytree(COURSE_SAMPLE, manual)
    ids = pd.read_csv(manual / "metadata.csv", dtype=str)["rare_species_id"]
    excluded = {ids[3]: "map", ids[30]: "text page"}
    pd.DataFrame({"rare_species_id": [*excluded, "not-a-real-id"], "reason": [*excluded.values(), "x"]}).to_csv(
        manual / catalog.EXCLUSIONS_FILE, index=False)
    builder = build(manual, tmp_path / "data")
    rows = _report(builder)
    assert dict(zip(rows.loc[rows["status"] == "excluded", "rare_species_id"],
                    rows.loc[rows["status"] == "excluded", "reason"])) == excluded
    assert builder.info.metadata["build_report"]["unmatched_exclusions"] == ["not-a-real-id"]
    assert sum(builder.info.splits[s].num_examples for s in ("train", "validation", "test")) == 44


def test_strict_build_fails_on_a_skipped_image(tmp_path):
    with pytest.raises(ValueError, match=r"row \d+: .*truncated.*strict"):
        build(COURSE_SAMPLE, tmp_path, strict=True)


def test_zipped_download_builds_like_the_folder(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    with zipfile.ZipFile(manual / "rare_species.zip", "w") as archive:
        for path in sorted(COURSE_SAMPLE.rglob("*")):
            archive.write(path, pathlib.Path("rare_species") / path.relative_to(COURSE_SAMPLE))
    builder = build(manual, tmp_path / "data")
    assert builder.info.splits["train"].num_examples == 38


def test_same_input_gives_byte_identical_records(tmp_path):
    digests = []
    for attempt in ("a", "b"):
        builder = build(COURSE_SAMPLE, tmp_path / attempt)
        files = sorted(pathlib.Path(builder.data_dir).glob("*.tfrecord*"))
        digests.append([(f.name, hashlib.sha256(f.read_bytes()).hexdigest()) for f in files])
    assert digests[0] == digests[1] and len(digests[0]) >= 3


def _course_download(tmp_path, real_metadata, real_taxonomy=None, per_family=4) -> pathlib.Path:
    rows = tiny_rows(real_metadata, per_family=per_family)
    return replica.write_replica(tmp_path / "download", rows, "course", real_taxonomy, min_side=40, max_side=60)


@pytest.mark.parametrize("edit, message", [
    (lambda f: f.drop(columns=["family"]), r"metadata.csv: row 1: missing column\(s\) family"),
    (lambda f: f.iloc[0:0], r"metadata.csv: has a header but no rows"),
    (lambda f: f.assign(rare_species_id=[f.rare_species_id[0]] * len(f)),
     r"metadata.csv: row 3: column rare_species_id: duplicate .*first at row 2"),
    (lambda f: f.assign(file_path=[f.file_path[0]] * len(f)), r"row 3: column file_name: duplicate"),
    (lambda f: f.assign(family=["dodoidae"] + list(f.family[1:])),
     r"row 2: column family: 'dodoidae' is not one of the 202 known family names"),
    (lambda f: f.assign(eol_page_id=["abc"] + list(f.eol_page_id[1:])),
     r"row 2: column eol_page_id: 'abc' is not a non-negative integer"),
])
def test_metadata_problems_fail_with_file_row_and_column(tmp_path, real_metadata, edit, message):
    download = _course_download(tmp_path, real_metadata)
    frame = pd.read_csv(download / "metadata.csv", dtype=str)
    edit(frame).to_csv(download / "metadata.csv", index=False)
    with pytest.raises(catalog.MetadataError, match=message):
        build(download, tmp_path / "data")


def test_empty_metadata_file_fails(tmp_path, real_metadata):
    download = _course_download(tmp_path, real_metadata)
    (download / "metadata.csv").write_text("")
    with pytest.raises(catalog.MetadataError, match=r"metadata.csv: file is empty"):
        build(download, tmp_path / "data")


def test_md5_mismatch_fails(tmp_path):
    manual = tmp_path / "download"
    shutil.copytree(IMAGEOMICS_SAMPLE, manual)
    licenses = pd.read_csv(manual / catalog.IMAGEOMICS_LICENSES, dtype=str)
    licenses.loc[5, "md5"] = "0" * 32
    licenses.to_csv(manual / catalog.IMAGEOMICS_LICENSES, index=False)
    with pytest.raises(catalog.MetadataError, match=r"licenses.csv: .*column md5: .*download it again"):
        build(manual, tmp_path / "data")


def test_missing_manual_download_names_what_to_do(tmp_path):
    (tmp_path / "download").mkdir()
    (tmp_path / "download" / "notes.txt").write_text("the images are still downloading")
    with pytest.raises(catalog.MetadataError, match=r"no metadata.csv or metadata/rarespecies-catalog.csv"):
        build(tmp_path / "download", tmp_path / "data")


@pytest.mark.slow
@pytest.mark.parametrize("form", ["registered", "folder"])
def test_tfds_cli_builds_and_tfds_load_reads_back(tmp_path, form, monkeypatch):
    """The registered form through `tfds build`'s own code in this process; the folder form, which TFDS imports
    from the path, as the real command."""
    arguments = ["--config=small_128", f"--manual_dir={COURSE_SAMPLE}", f"--data_dir={tmp_path}",
                 f"--download_dir={tmp_path / 'downloads'}"]
    monkeypatch.chdir(tmp_path)
    if form == "registered":
        assert tfds_build(*arguments)[0] is None  # ended without exiting: built
    else:
        subprocess.run([str(pathlib.Path(sys.executable).parent / "tfds"), "build", str(BUILDER_DIR), *arguments],
                       check=True, capture_output=True, text=True)
    loaded = tfds.load("rare_species/small_128", split="train+validation", data_dir=str(tmp_path))
    assert sum(1 for _ in loaded) == 42
    assert (tmp_path / "rare_species" / "small_128" / "1.1.0" / report.JSON_NAME).exists()
