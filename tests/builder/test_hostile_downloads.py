"""Downloads and command lines that used to escape --data_dir, abort the build on one image, pick a file or a
download silently, or end in a traceback: each now ends as a reported row or as one line."""

import errno
import hashlib
import io
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
import zipfile

import pandas as pd
import pytest
from PIL import Image

import tfds_rarespecies
from tests.builder.test_builder import COURSE_SAMPLE
from tests.builder.test_config_fields import assert_one_line, tfds_build
from tests.builder.test_download_problems import LIBRARY_LINE
from tests.conftest import build, tiny_rows
from tfds_rarespecies import catalog, errors, fields, replica, report, splits
from tfds_rarespecies.rare_species import rare_species_dataset_builder as builder_module


def _download(tmp_path: pathlib.Path, name: str = "download") -> pathlib.Path:
    return shutil.copytree(COURSE_SAMPLE, tmp_path / name, ignore=shutil.ignore_patterns("rare_species_prepared"))


def _metadata_paths(download: pathlib.Path) -> list[str]:
    return pd.read_csv(download / catalog.COURSE_METADATA, dtype=str)["file_path"].tolist()


def _rows(builder) -> pd.DataFrame:
    return pd.read_csv(pathlib.Path(builder.data_dir) / report.CSV_NAME, dtype=str,
                       keep_default_na=False).set_index("file_name")


def _tree(folder: pathlib.Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*")}


def _png(size: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (40, 120, 60)).save(out, "PNG")
    return out.getvalue()


# --- paths --------------------------------------------------------------------------------------------------


def test_a_build_writes_only_into_data_dir_and_leaves_no_scratch(tmp_path):
    download = _download(tmp_path)
    before = _tree(download)
    builder = build(download, tmp_path / "data")
    assert _tree(download) == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["data", "download"]
    assert not list((tmp_path / "data").rglob(builder_module.SCRATCH))
    assert builder.info.splits.total_num_examples == 46


def test_split_names_are_valid_path_components():
    assert all(fields.Name().problem(split) is None for split in splits.SPLITS)


@pytest.mark.parametrize("flag", ["data_dir", "manual_dir"])
def test_a_folder_starting_with_tilde_is_refused_before_anything_is_written(tmp_path, monkeypatch, flag):
    monkeypatch.chdir(tmp_path)
    folders = {"manual_dir": COURSE_SAMPLE, "data_dir": tmp_path / "data", flag: "~/rare_species_nowhere"}
    with pytest.raises(errors.BuildError, match=rf"^--{flag}=~/rare_species_nowhere: starts with ~.*; write "
                                                rf"--{flag}=\$HOME/rare_species_nowhere$"):
        build(folders["manual_dir"], folders["data_dir"])
    assert list(tmp_path.iterdir()) == []


def test_a_metadata_path_leading_outside_the_download_is_refused(tmp_path):
    download = _download(tmp_path)
    metadata = pd.read_csv(download / catalog.COURSE_METADATA, dtype=str)
    metadata.loc[3, "file_path"] = "../../elsewhere/" + metadata.loc[3, "file_path"].rsplit("/", 1)[-1]
    metadata.to_csv(download / catalog.COURSE_METADATA, index=False)
    with pytest.raises(catalog.MetadataError, match=r"row 5: column file_path: '\.\./\.\./elsewhere/.*' leads "
                                                    r"outside the download folder"):
        build(download, tmp_path / "data")


# --- per-image failures -------------------------------------------------------------------------------------


def test_a_tiny_image_and_a_strip_too_long_for_jpeg_are_skipped_rows_not_aborts(tmp_path):
    download = _download(tmp_path)
    paths = _metadata_paths(download)
    (download / paths[1]).write_bytes(_png((1, 1)))
    (download / paths[2]).write_bytes(_png((31, 300)))
    (download / paths[3]).write_bytes(_png((40, 70_000)))  # stays 70,000 long at 128 px: over 65,500
    builder = build(download, tmp_path / "data", num_workers=1)
    rows = _rows(builder)
    names = [path.rsplit("/", 1)[-1] for path in paths[1:4]]
    assert rows.loc[names, "reason"].tolist() == ["too_small", "too_small", "unencodable"]
    assert (rows.loc[names, "status"] == "skipped").all()
    assert builder.info.splits.total_num_examples == 43


def test_min_side_is_a_config_field(tmp_path):
    download = _download(tmp_path)
    (download / _metadata_paths(download)[1]).write_bytes(_png((20, 300)))
    rows = _rows(build(download, tmp_path / "data", min_side=16))
    assert rows.loc[_metadata_paths(download)[1].rsplit("/", 1)[-1], "status"] == "written"


# --- which file, which download -----------------------------------------------------------------------------


def test_the_file_at_the_metadata_path_wins_and_a_same_named_stray_is_reported(tmp_path):
    download = _download(tmp_path)
    named = _metadata_paths(download)[1]
    stray = download / "aaa_stray" / named.rsplit("/", 1)[-1]  # sorts before every family folder
    stray.parent.mkdir()
    stray.write_bytes(_png((200, 200)))
    builder = build(download, tmp_path / "data")
    row = _rows(builder).loc[stray.name]
    assert row["status"] == "written"
    payload = json.loads((pathlib.Path(builder.data_dir) / report.JSON_NAME).read_text())
    assert payload["same_name_file_names"] == [f"aaa_stray/{stray.name}"] and payload["same_name_files"] == 1
    example = next(e for e in builder.as_dataset(split="train").concatenate(builder.as_dataset(split="validation"))
                   .concatenate(builder.as_dataset(split="test")).as_numpy_iterator()
                   if e["file_name"].decode() == stray.name)
    assert example["content_sha256"].decode() == hashlib.sha256((download / named).read_bytes()).hexdigest()


def test_a_file_moved_elsewhere_is_read_and_reported_and_two_candidates_are_read_for_none(tmp_path):
    download = _download(tmp_path)
    moved, doubled = _metadata_paths(download)[1:3]
    (download / "moved").mkdir()
    shutil.move(download / moved, download / "moved")
    for folder in ("copy_a", "copy_b"):
        (download / folder).mkdir()
        shutil.copy(download / doubled, download / folder)
    (download / doubled).unlink()
    builder = build(download, tmp_path / "data")
    rows = _rows(builder)
    moved_name, doubled_name = moved.rsplit("/", 1)[-1], doubled.rsplit("/", 1)[-1]
    assert rows.loc[moved_name, "status"] == "written"
    assert tuple(rows.loc[doubled_name, ["status", "reason"]]) == ("missing", "ambiguous_name")
    payload = json.loads((pathlib.Path(builder.data_dir) / report.JSON_NAME).read_text())
    assert payload["found_elsewhere_paths"] == [f"{moved} -> moved/{moved_name}"]
    assert payload["same_name_file_names"] == [f"copy_a/{doubled_name}", f"copy_b/{doubled_name}"]


def _zip(folder: pathlib.Path, target: pathlib.Path) -> pathlib.Path:
    with zipfile.ZipFile(target, "w") as archive:
        for path in sorted(folder.rglob("*")):
            archive.write(path, path.relative_to(folder.parent))
    return target


@pytest.mark.parametrize("layout", ["two_folders", "folder_and_zip", "two_zips"])
def test_a_manual_dir_holding_two_downloads_is_refused_naming_them(tmp_path, layout):
    manual = tmp_path / "manual"
    manual.mkdir()
    first = _download(manual, "first")
    expected = ["first/metadata.csv"]
    if layout == "two_folders":
        _download(manual, "second")
        expected.append("second/metadata.csv")
    else:
        _zip(first, manual / "second.zip")
        expected.append("second.zip")
        if layout == "two_zips":
            _zip(first, manual / "first.zip")
            shutil.rmtree(first)
            expected = ["first.zip", "second.zip"]
    with pytest.raises(errors.BuildError, match=rf"^--manual_dir={manual}: holds 2 downloads "
                                                rf"\({', '.join(expected)}\); move all but one out"):
        build(manual, tmp_path / "data")
    assert not list((tmp_path / "data").rglob("*.tfrecord*")) + list((tmp_path / "data").rglob("build_report*"))


# --- user errors under `tfds build`: one line, never a traceback --------------------------------------------


@pytest.mark.parametrize("what", ["zip", "file"])
def test_a_manual_dir_that_is_a_file_or_the_zip_itself_is_one_line(tmp_path, what):
    target = _zip(_download(tmp_path), tmp_path / "rare_species.zip") if what == "zip" else \
        tmp_path / "download" / "metadata.csv"
    if what == "file":
        _download(tmp_path)
    code, stderr = tfds_build("--config=small_128", f"--manual_dir={target}",
                              f"--data_dir={tmp_path / 'data'}")
    assert_one_line(code, stderr, rf"tfds build: error: --manual_dir={target}: a file, not a "
                    rf"folder; pass the folder holding it \(--manual_dir=")
    assert not (tmp_path / "data").exists()


def test_a_full_disk_is_one_line_naming_where(tmp_path, monkeypatch):
    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(pathlib.Path, "write_bytes", full)
    code, stderr = tfds_build('--config={"name": "full_disk", "short_side": 128, "num_workers": 1}',
                              f"--manual_dir={COURSE_SAMPLE}", f"--data_dir={tmp_path / 'data'}")
    assert_one_line(code, stderr, r"tfds build: error: .*\.jpg: no space left on the disk; "
                    r"free space there, or build into a --data_dir")
    assert not list((tmp_path / "data").rglob("*.tfrecord*"))


def test_ctrl_c_is_one_line_with_exit_130_and_no_unfinished_folder(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(catalog, "read_download", interrupted)
    code, stderr = tfds_build("--config=small_128", f"--manual_dir={COURSE_SAMPLE}",
                              f"--data_dir={tmp_path / 'data'}")
    assert_one_line(code, stderr, r"tfds build: interrupted \(Ctrl-C\); the unfinished dataset folder is removed",
                    errors.EXIT_INTERRUPTED)
    assert not list((tmp_path / "data").rglob("incomplete*"))


def test_a_library_caller_still_gets_the_interrupt(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(catalog, "read_download", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build(COURSE_SAMPLE, tmp_path / "data")


@pytest.mark.slow
def test_ctrl_c_while_the_decoding_workers_start_is_one_line_from_the_real_command(tmp_path, real_metadata):
    """SIGINT to the whole process group (what a terminal's Ctrl-C sends) once the decoding has begun (its scratch
    folder holds its first file): the workers must not print a traceback each, and the command ends in one
    line with exit status 130, leaving no unfinished folder."""
    rows = tiny_rows(real_metadata, per_family=60)
    download = replica.write_replica(tmp_path / "download", rows, "course", min_side=300, max_side=500)
    data = tmp_path / "data"
    command = [str(pathlib.Path(sys.executable).parent / "tfds"), "build", "rare_species",
               "--imports=tfds_rarespecies", "--config=small_128", f"--manual_dir={download}", f"--data_dir={data}"]
    # SIGINT at its default, as a terminal starts a command: one started from a background job inherits it
    # ignored, and Python keeps it so.
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                               env=dict(os.environ, TQDM_DISABLE="1"), start_new_session=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    # Once the first file is decoded: the pool has started (SIGINT is ignored, and lost, while it starts).
    while not list(data.glob(f"rare_species/small_128/incomplete.*/{builder_module.SCRATCH}/*")):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    ours = [line for line in stderr.splitlines() if line and not LIBRARY_LINE.match(line)]
    assert (process.returncode, ours) == (errors.EXIT_INTERRUPTED, [ours[-1]]), stderr
    assert "Traceback" not in stderr and ours[0].startswith("tfds build: interrupted (Ctrl-C)")
    assert not list(data.rglob("incomplete.*"))


def test_a_build_that_another_process_finished_first_ends_in_one_line(tmp_path, monkeypatch):
    """Two builds of one config into one data_dir at once: the other process's dataset appears while this one
    runs (copied in once this one has split), and this one's rename onto it fails."""
    reference = pathlib.Path(build(COURSE_SAMPLE, tmp_path / "reference").data_dir)
    target = tmp_path / "data" / "rare_species" / "small_128" / reference.name
    finish = builder_module._finish

    def finish_then_other_process_finishes(*args, **kwargs):
        table = finish(*args, **kwargs)
        shutil.copytree(reference, target)
        return table

    monkeypatch.setattr(builder_module, "_finish", finish_then_other_process_finishes)
    with pytest.raises(errors.BuildError, match=r"small_128/1\.1\.0: another build of rare_species/small_128 "
                                                r"finished there while this one ran; that dataset is complete"):
        build(COURSE_SAMPLE, tmp_path / "data")
    assert _tree(target) == _tree(reference) and not list(target.parent.glob("incomplete.*"))


def test_a_shipped_name_in_another_case_is_refused(tmp_path):
    config = tfds_rarespecies.RareSpeciesConfig(name="Small_128", short_side=100)
    with pytest.raises(errors.BuildError, match=r"^--config=Small_128: that name is a shipped config's"):
        tfds_rarespecies.Builder(config=config, data_dir=str(tmp_path))
