"""The Beam executor (`tfds build --beam_pipeline_options=...`) builds what the local executor builds: the same
examples, in the same splits and order, with the same bytes, and the same build report but for the executor it
names.

"The same bytes" is each record's canonical (deterministic) serialization: the shard files themselves differ
between any two processes, Beam or not, because protobuf serializes an Example's feature map in a per-process
order (two local builds in two processes differ too)."""

import hashlib
import io
import json
import pathlib
import shutil

import pandas as pd
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from apache_beam.options.pipeline_options import PipelineOptions
from PIL import Image

import tfds_rarespecies
from tests.builder.test_builder import COURSE_SAMPLE
from tests.builder.test_download_problems import _too_small_for_species_split
from tfds_rarespecies import errors, report

BEAM_OPTIONS = {"runner": "DirectRunner", "direct_num_workers": 2, "direct_running_mode": "multi_processing"}


@pytest.fixture(scope="module")
def download(tmp_path_factory) -> pathlib.Path:
    """The course sample (grayscale, PNG, truncated, missing and unnamed files) plus an exact copy, a
    re-encoded copy and a text file named like an image, in acroporidae."""
    root = tmp_path_factory.mktemp("beam") / "download"
    shutil.copytree(COURSE_SAMPLE, root)
    metadata = pd.read_csv(root / "metadata.csv", dtype=str)
    files = [root / path for path in metadata.loc[metadata["family"] == "acroporidae", "file_path"]]
    shutil.copyfile(files[3], files[2])
    recoded = io.BytesIO()
    Image.open(files[5]).convert("RGB").save(recoded, "JPEG", quality=60)
    files[4].write_bytes(recoded.getvalue())
    files[6].write_text("not a photo")
    return root


def _build(download: pathlib.Path, data_dir: pathlib.Path, beam: bool, config: str = "small_128"
           ) -> tfds.core.DatasetBuilder:
    builder = tfds_rarespecies.Builder(config=config, data_dir=str(data_dir))
    options = PipelineOptions([f"--{key}={value}" for key, value in BEAM_OPTIONS.items()]) if beam else None
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=str(download), beam_options=options))
    return builder


@pytest.fixture(scope="module")
def builders(download, tmp_path_factory) -> dict[str, tfds.core.DatasetBuilder]:
    root = tmp_path_factory.mktemp("builds")
    return {name: _build(download, root / name, beam=name == "beam") for name in ("local", "beam")}


@pytest.fixture(scope="module")
def builds(builders) -> dict[str, pathlib.Path]:
    return {name: pathlib.Path(builder.data_dir) for name, builder in builders.items()}


def _records(folder: pathlib.Path) -> dict[str, list[str]]:
    """Shard file name -> sha256 of each record's canonical serialization, in file order."""
    return {path.name: [hashlib.sha256(tf.train.Example.FromString(record.numpy()).SerializeToString(
        deterministic=True)).hexdigest() for record in tf.data.TFRecordDataset(str(path))]
        for path in sorted(folder.glob("*.tfrecord*"))}


@pytest.mark.slow
def test_beam_writes_the_same_records_in_the_same_shards_and_order(builds):
    local = _records(builds["local"])
    assert [len(records) for records in local.values()] == [4, 37, 4]  # test, train, validation
    assert _records(builds["beam"]) == local


@pytest.mark.slow
def test_beam_reports_the_same_rows_and_names_its_executor(builds):
    csv = {name: (folder / report.CSV_NAME).read_text() for name, folder in builds.items()}
    assert csv["beam"] == csv["local"]
    rows = pd.read_csv(builds["local"] / report.CSV_NAME, dtype=str, keep_default_na=False)
    assert set(rows["reason"]) >= {"truncated", "not_an_image", "no_file"}
    payloads = {name: json.loads((folder / report.JSON_NAME).read_text()) for name, folder in builds.items()}
    executors = {name: payload.pop("executor") for name, payload in payloads.items()}
    assert payloads["beam"] == payloads["local"] and payloads["local"]["duplicate_groups"] == 2
    assert executors == {"beam": {"name": "beam", "options": BEAM_OPTIONS},
                         "local": {"name": "local", "workers": executors["local"]["workers"]}}



@pytest.mark.slow
def test_beam_build_puts_its_report_in_the_dataset_metadata(builders):
    metadata = {name: dict(builder.info.metadata["build_report"]) for name, builder in builders.items()}
    assert metadata["beam"].pop("executor")["name"] == "beam" and metadata["local"].pop("executor")
    assert metadata["beam"] == metadata["local"] and sum(metadata["beam"]["splits"].values()) == 45


@pytest.mark.slow
def test_a_user_error_in_a_beam_worker_is_the_same_one_line_build_error(tmp_path, real_metadata):
    download = _too_small_for_species_split(tmp_path, real_metadata)
    with pytest.raises(errors.BuildError, match=r"^--config=small_128_species_disjoint: the species_disjoint split "
                                                r".*: unionidae; .*\(--config=small_128\), or a download with more "
                                                r"species per family$"):
        _build(download, tmp_path / "data", beam=True, config="small_128_species_disjoint")


def test_only_a_worker_build_error_is_unwrapped():
    worker = ("Traceback (most recent call last):\n  File ...\ntfds_rarespecies.errors.BuildError: --config=x: "
              "too small; do this [while running 'train/Assign']\n\nDuring handling ...")
    with pytest.raises(errors.BuildError, match=r"^--config=x: too small; do this$"):
        with errors.raised_by_beam_workers():
            raise RuntimeError(worker)
    with pytest.raises(RuntimeError, match="a bug"):
        with errors.raised_by_beam_workers():
            raise RuntimeError("ValueError: a bug")
