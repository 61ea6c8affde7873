"""A download as a new user has it: files that cannot be read, links out of it, and mistakes that must end
`tfds build` in one line (exit status 2, no traceback) while a library call still gets the exception."""

import errno
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pandas as pd
import pytest

import tfds_rarespecies
from tests.builder.test_builder import COURSE_SAMPLE
from tests.builder.test_config_fields import assert_one_line, tfds_build
from tests.conftest import build, tiny_rows
from tfds_rarespecies import errors, preparing, replica, report

SECRET = "root:x:0:0:SECRET-FIRST-LINE"
# Lines TensorFlow, TFDS and absl print on their own under `tfds build` (the ones `make demo` filters out):
# glog lines, TFDS' INFO/WARNING records, absl's and Beam's start-up notes, cpu_feature_guard's continuation.
LIBRARY_LINE = re.compile(r"[IWEF]\d{4} |(INFO|WARNING|ERROR)\[[\w.]+\]: |WARNING: All log messages before absl"
                           r"|WARNING:root:apitools not found|To enable the following instructions")


def _replace(path: pathlib.Path, make) -> None:
    """Puts something else where a downloaded image was."""
    path.unlink()
    make(path)


@pytest.fixture
def hostile_download(tmp_path) -> tuple[pathlib.Path, dict[str, str]]:
    """The course sample with, in place of one clean image per family, one thing each a download must survive;
    file name -> expected reason. (Each family's first row is the sample's own odd file: grayscale, PNG,
    truncated, missing.)"""
    download = tmp_path / "download"
    shutil.copytree(COURSE_SAMPLE, download)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "passwd").write_text(SECRET + "\nmore lines\n")
    metadata = pd.read_csv(download / "metadata.csv", dtype=str)
    families = metadata.groupby("family")["file_path"]
    files = {family: [download / path for path in paths] for family, paths in families}
    _replace(files["acroporidae"][1], lambda p: p.symlink_to(download / "gone.jpg"))
    _replace(files["apidae"][1], lambda p: p.symlink_to(outside / "passwd"))
    _replace(files["apidae"][2], lambda p: p.symlink_to(p))
    _replace(files["cheloniidae"][1], lambda p: p.mkdir())
    files["unionidae"][1].write_text(SECRET)
    expected = {("acroporidae", 1): "missing_target", ("apidae", 1): "outside_download", ("apidae", 2): "read_error",
                ("cheloniidae", 1): "not_a_file", ("unionidae", 1): "not_an_image"}
    return download, {files[family][i].name: reason for (family, i), reason in expected.items()}


def _report_texts(builder) -> str:
    folder = pathlib.Path(builder.data_dir)
    return (folder / report.CSV_NAME).read_text() + (folder / report.JSON_NAME).read_text()


def test_every_unusable_file_is_a_reported_row_without_its_bytes(tmp_path, hostile_download, monkeypatch):
    download, expected = hostile_download
    names = pd.read_csv(download / "metadata.csv", dtype=str).groupby("family")["file_path"].apply(
        lambda paths: [path.rsplit("/", 1)[-1] for path in paths])
    locked, truncated = names["acroporidae"][2], names["cheloniidae"][0]
    expected[locked] = "permission_denied"
    read_bytes = pathlib.Path.read_bytes

    def refuse_locked(path):  # root reads any file, so the refusal is mocked (num_workers=1: in this process)
        if path.name == locked:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return read_bytes(path)

    monkeypatch.setattr(pathlib.Path, "read_bytes", refuse_locked)
    builder = build(download, tmp_path / "data", num_workers=1)
    rows = pd.read_csv(pathlib.Path(builder.data_dir) / report.CSV_NAME, dtype=str, keep_default_na=False)
    skipped = rows[rows["status"] == "skipped"].set_index("file_name")["reason"].to_dict()
    assert skipped == {**expected, truncated: "truncated"}
    assert rows["status"].value_counts().to_dict() == {"written": 40, "skipped": 7, "missing": 1}
    assert builder.info.splits.total_num_examples == 40
    texts = _report_texts(builder)
    assert "SECRET" not in texts and "\\x" not in texts and str(tmp_path / "elsewhere") not in texts


def test_a_config_field_lets_links_out_of_the_download_be_read(tmp_path, hostile_download):
    download, expected = hostile_download
    builder = build(download, tmp_path / "data", follow_symlinks_out=True)
    rows = pd.read_csv(pathlib.Path(builder.data_dir) / report.CSV_NAME, dtype=str, keep_default_na=False)
    linked = next(name for name, reason in expected.items() if reason == "outside_download")
    assert rows.set_index("file_name").at[linked, "reason"] == "not_an_image"
    assert "SECRET" not in _report_texts(builder)


def _too_small_for_species_split(tmp_path, real_metadata) -> pathlib.Path:
    """unionidae with 3 images of one species and 1 of the other: stratified works, species-disjoint cannot
    reach both validation and test."""
    family = real_metadata[real_metadata["family"] == "unionidae"].sort_values("rare_species_id")
    rows = pd.concat([group.head(n) for (_, group), n in zip(family.groupby("eol_page_id"), (3, 1))])
    return replica.write_replica(tmp_path / "small", rows.reset_index(drop=True), "course", min_side=40,
                                 max_side=60)


def test_subset_too_small_for_the_species_split_names_config_and_what_to_build(tmp_path, real_metadata):
    download = _too_small_for_species_split(tmp_path, real_metadata)
    with pytest.raises(errors.BuildError, match=r"^--config=small_128_species_disjoint: the species_disjoint "
                                                r"split .*: unionidae; .*\(--config=small_128\)"):
        build(download, tmp_path / "data", config="small_128_species_disjoint")
    assert build(download, tmp_path / "data").info.splits.total_num_examples == 4


def test_a_family_with_fewer_images_than_splits_fails_every_scheme_naming_it(tmp_path, real_metadata):
    """No other config can split a 2-image family, so the advice is about the images, not --config."""
    rows = tiny_rows(real_metadata, per_family=4)
    rows = rows.drop(index=rows.index[rows["family"] == "unionidae"][2:])
    download = replica.write_replica(tmp_path / "download", rows.reset_index(drop=True), "course", min_side=40,
                                     max_side=60)
    for config in ("small_128", "small_128_species_disjoint"):
        with pytest.raises(errors.BuildError) as raised:
            build(download, tmp_path / config, config=config)
        assert re.match(rf"--config={config}: every family needs at least 3 images .*: unionidae \(2\); add "
                        r"images of those families, or leave them out", str(raised.value)), str(raised.value)
        assert "\n" not in str(raised.value) and "--config=small_128)" not in str(raised.value)


def _cli_cases(tmp_path: pathlib.Path, real_metadata: pd.DataFrame) -> dict[str, tuple[list[str], str]]:
    """Case -> (its own `tfds build` arguments, the message its one line must hold)."""
    valid = replica.write_replica(tmp_path / "valid", tiny_rows(real_metadata, per_family=4), "course",
                                  min_side=40, max_side=60)
    non_utf8 = shutil.copytree(valid, tmp_path / "non_utf8")
    lines = (non_utf8 / "metadata.csv").read_bytes().split(b"\n")
    lines[3] = lines[3].replace(b"animalia", b"anim\xe4lia")
    (non_utf8 / "metadata.csv").write_bytes(b"\n".join(lines))
    cases = {"non_utf8": ([f"--manual_dir={non_utf8}", "--config=small_128"],
                          r"metadata.csv: row 4: byte \d+ of the line \(0xe4\) is not UTF-8; save the file as UTF-8")}
    no_metadata = shutil.copytree(valid, tmp_path / "no_metadata")
    (no_metadata / "metadata.csv").unlink()
    cases["no_metadata"] = ([f"--manual_dir={no_metadata}", "--config=small_128"],
                            r"no metadata.csv or .* point --manual_dir at")
    cases["no_manual_dir"] = (["--config=small_128"], r"--manual_dir: not given, .*; pass --manual_dir=PATH")
    small = _too_small_for_species_split(tmp_path, real_metadata)
    cases["too_small"] = ([f"--manual_dir={small}", "--config=small_128_species_disjoint"],
                          r"--config=small_128_species_disjoint: .*unionidae; .*\(--config=small_128\)")
    cases["too_small_no_config"] = ([f"--manual_dir={small}"], r"--config=inception_342_species_disjoint: "
                                    r".*unionidae; .*\(--config=inception_342\)")
    cases["unknown_field"] = ([f"--manual_dir={valid}", '--config={"name": "mine", "shortside": 200}'],
                              r"--config=mine: no field shortside; the fields are .*short_side")
    cases["string_bool"] = ([f"--manual_dir={valid}", '--config={"name": "mine", "strict": "false"}'],
                            r"--config=mine: field strict is 'false'; it must be true or false")
    cases["tilde_data_dir"] = ([f"--manual_dir={valid}", "--config=small_128", "--data_dir=~/rs_nowhere"],
                               r"--data_dir=~/rs_nowhere: starts with ~.*; write --data_dir=\$HOME/rs_nowhere")
    return cases


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory, real_metadata) -> dict[str, tuple[int | str | None, str, list[str], str]]:
    """Every case through `tfds build`'s own code in this process (test_config_fields.tfds_build), in one
    working directory: case -> (exit status, stderr, arguments, message). test_the_real_tfds_build_... runs one
    case as the real command.

    One case per place a user error can arise (reading the metadata, locating the download, TFDS' manual_dir,
    the split after decoding); the other messages (unknown family, duplicate id, ...) come through the same
    download_and_prepare and are checked in-process in test_builder.py.
    """
    root = tmp_path_factory.mktemp("cli")
    runs = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("TQDM_DISABLE", "1")
        for name, (arguments, message) in _cli_cases(root, real_metadata).items():
            given = any(argument.startswith("--data_dir=") for argument in arguments)
            data_dir = [] if given else [f"--data_dir={root / 'data' / name}"]
            command = [*arguments, *data_dir, f"--download_dir={root / 'downloads' / name}"]
            runs[name] = (*tfds_build(*command), command, message)
    return runs


@pytest.mark.parametrize("case", ["non_utf8", "no_metadata", "no_manual_dir", "too_small", "too_small_no_config",
                                  "unknown_field", "string_bool", "tilde_data_dir"])
def test_tfds_build_ends_a_user_error_in_one_line(cli_runs, case):
    code, stderr, _, message = cli_runs[case]
    assert_one_line(code, stderr, rf"tfds build: error: .*{message}")


@pytest.mark.slow
def test_the_real_tfds_build_ends_a_user_error_in_one_line(tmp_path, real_metadata):
    """One case as the user runs it: the `tfds` command in a process of its own, with TensorFlow's and TFDS'
    own start-up lines around the one line."""
    arguments, message = _cli_cases(tmp_path, real_metadata)["non_utf8"]
    command = [str(pathlib.Path(sys.executable).parent / "tfds"), "build", "rare_species",
               "--imports=tfds_rarespecies", *arguments, f"--data_dir={tmp_path / 'data'}",
               f"--download_dir={tmp_path / 'downloads'}"]
    run = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=dict(os.environ, TQDM_DISABLE="1"),
                         timeout=300)
    ours = [line for line in run.stderr.splitlines() if line and not LIBRARY_LINE.match(line)]
    assert (run.returncode, len(ours)) == (errors.EXIT_USAGE, 1), run.stderr
    assert "Traceback" not in run.stderr and run.stderr.rstrip().endswith(ours[0])
    assert re.match(r"tfds build: error: ", ours[0]) and re.search(message, ours[0]), ours[0]
    assert not list((tmp_path / "data").glob("**/*.tfrecord*"))


@pytest.mark.slow
def test_tfds_build_writes_nothing_for_a_tilde_data_dir_or_a_string_bool(cli_runs):
    """The cases run in one working directory: no `~` folder appears there, and no dataset for either."""
    arguments = cli_runs["tilde_data_dir"][2]
    root = pathlib.Path(arguments[-1].split("=", 1)[1]).parent.parent
    assert not (root / "~").exists()
    assert not list((root / "data").glob("string_bool/**/*.tfrecord*"))


@pytest.mark.slow
def test_tfds_build_without_config_builds_the_configs_before_the_one_too_small(cli_runs):
    """Every config in BUILDER_CONFIGS order: the three stratified ones fit the subset, the first species-
    disjoint one ends the command, and the ones after it are not started."""
    arguments = cli_runs["too_small_no_config"][2]
    data_dir = pathlib.Path(next(a for a in arguments if a.startswith("--data_dir=")).split("=", 1)[1])
    built = sorted(path.parent.parent.name for path in data_dir.glob("rare_species/*/*/dataset_info.json"))
    assert built == ["inception_342", "small_128", "standard_256"]
    assert not (data_dir / "rare_species" / "standard_256_species_disjoint").exists()


def test_a_fifo_named_like_an_image_is_skipped_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "1_2_eol-full-size-copy.jpg")
    job = preparing.Job("1_2_eol-full-size-copy.jpg", str(tmp_path / "1_2_eol-full-size-copy.jpg"),
                        str(tmp_path / "out.jpg"))
    assert preparing.prepare_one(job, 64, 90).reason == "not_a_file"


@pytest.mark.parametrize("field, value, message", [
    ("short_side", 0, r"field short_side is 0; it must be an integer from 1 to 65500"),
    ("jpeg_quality", 101, r"field jpeg_quality is 101; it must be an integer from 1 to 100"),
    ("split_scheme", "species", r"field split_scheme is 'species'; it must be one of stratified, species_disjoint"),
    ("fractions", (0.8, 0.3, 0.1), r"fractions must be 3 positive numbers summing to 1.*; fix the fields"),
    ("exclusions", "/no/such/exclusions.csv", r"field exclusions: /no/such/exclusions.csv is not a file"),
], ids=["short_side", "jpeg_quality", "split_scheme", "fractions", "exclusions"])
def test_a_config_field_out_of_range_fails_before_decoding(tmp_path, field, value, message):
    with pytest.raises(errors.BuildError, match=r"^--config=small_128_custom: " + message):
        build(COURSE_SAMPLE, tmp_path, **{field: value})


def test_a_config_field_it_does_not_have_is_named():
    with pytest.raises(errors.BuildError, match=r"^--config=mine: no field jpg_quality, shortside; the fields are "):
        tfds_rarespecies.RareSpeciesConfig(name="mine", shortside=200, jpg_quality=80)
