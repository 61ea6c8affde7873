"""rare_species: the EOL Rare Species images (11,983 photos, 202 families, 5 phyla) as sharded TFRecords.

Build it with either form:

    tfds build rare_species --imports=tfds_rarespecies --manual_dir=DOWNLOAD --data_dir=DATA [--config=NAME]
    tfds build tfds_rarespecies/rare_species --manual_dir=DOWNLOAD --data_dir=DATA [--config=NAME]

DOWNLOAD holds the download as it came (a zip) or its extracted contents, in the course layout (metadata.csv)
or Imageomics' layout (metadata/rarespecies-catalog.csv). The flow: catalog (read + validate) -> preparing
(decode, resize, encode, hash: in parallel) -> splits (stratified, duplicate-aware, deterministic) -> report
(every row accounted for) -> examples.
"""

import contextlib
import dataclasses
import errno
import functools
import json
import operator
import os
import pathlib
import sys

import numpy as np
import pandas as pd
import tensorflow_datasets as tfds

from tfds_rarespecies import catalog, errors, fields, imaging, labels, preparing, report, splits

# The folder, inside the dataset's own incomplete.* folder, where the decoded JPEGs wait for their split.
SCRATCH = "decoded.tmp"
_MANUAL_DOWNLOAD_INSTRUCTIONS = """
Download the Rare Species images (the course zip with metadata.csv, or Imageomics' rare_species with
metadata/rarespecies-catalog.csv) and put the zip or its extracted folder in `manual_dir`
(`tfds build ... --manual_dir=PATH`). Optional: rare_species_taxonomy.csv beside metadata.csv (adds taxonomy),
exclusions.csv (rare_species_id,reason) in the download root to leave known-bad images out.
"""


@dataclasses.dataclass(eq=False)
class RareSpeciesConfig(tfds.core.BuilderConfig):
    """One stored size and one split scheme.

    Any field can be set from the command line: `--config='{"name": "mine", "short_side": 300, "strict": true}'`.

    Attributes:
      short_side: stored short side in pixels (aspect ratio kept, never upscaled).
      min_side: smallest stored short side in pixels: a smaller image is skipped as `too_small` (the consumers,
        pipelines and the audit, are tested at this size; a 1-pixel image is no photo to learn from).
      jpeg_quality: quality of the re-encoded JPEG.
      split_scheme: "stratified" (by family) or "species_disjoint" (validation/test species never in train).
      fractions: train/validation/test fractions.
      near_duplicate_distance: perceptual-hash Hamming distance (of 64 bits) under which two images of one
        family count as near duplicates and share a split.
      seed: salt of the deterministic split order.
      strict: fail the build when any image is skipped.
      exclusions: path of an exclusion CSV (rare_species_id,reason); empty = `exclusions.csv` in the download
        root when there is one.
      num_workers: decoding processes; 0 = every core.
      follow_symlinks_out: read image files that are symlinks to places outside --manual_dir (e.g. another
        disk); by default they are skipped as `outside_download`, so a download cannot make the build read,
        hash and store whatever file on the machine a link points at.
      labels: "shipped": the label lists and tree shipped with the package (Rare Species' 202 families, 5
        phyla, ...; any other family stops the build); "from_metadata": every rank's names and the tree read
        from the download's own metadata (any EOL-format collection), sorted, stored in the dataset.
    """

    def __new__(cls, *args, **values):
        """`--config='{...}'` with a field name the config does not have: one line under `tfds build` (TFDS
        builds the config from the JSON before any builder code runs, so a TypeError would end it in a
        traceback), a BuildError elsewhere."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(map(str, set(values) - known))
        with errors.one_line_under_tfds_build():
            if unknown:
                raise errors.BuildError(
                    f"{fields.flag(values.get('name'))}: no field {', '.join(unknown)}; the fields are "
                    f"{', '.join(sorted(known - {'name', 'version', 'release_notes', 'supported_versions'}))}")
        return super().__new__(cls)

    def __post_init__(self):
        """Every field by type and range (fields.py says why), then the combinations, before anything runs."""
        with errors.one_line_under_tfds_build():
            fields.check(self, _RULES)
            self.fractions = tuple(float(fraction) for fraction in self.fractions)
            if self.min_side > self.short_side:
                raise errors.BuildError(f"{fields.flag(self.name)}: field min_side is {self.min_side}, above "
                                        f"short_side {self.short_side}; it must be at most short_side")
            try:
                splits.check_scheme(self.split_scheme, self.fractions)
            except ValueError as exc:
                raise errors.BuildError(f"{fields.flag(self.name)}: {exc}; fix the fields split_scheme and "
                                        "fractions") from None

    short_side: int = 342
    min_side: int = 32
    jpeg_quality: int = 90
    split_scheme: str = "stratified"
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    near_duplicate_distance: int = splits.NEAR_DUPLICATE_MAX_DISTANCE
    seed: int = 0
    strict: bool = False
    exclusions: str = ""
    num_workers: int = 0
    follow_symlinks_out: bool = False
    labels: str = "shipped"


# Each field's rule (TFDS' own fields first): fields.check applies them in this order.
_RULES = {
    "name": fields.Name(), "version": fields.Version(),
    "supported_versions": fields.ListOf(fields.Version(), "versions x.y.z"), "release_notes": fields.Notes(),
    "description": fields.Text(optional=True), "tags": fields.ListOf(fields.Text(), "strings"),
    "short_side": fields.Integer(1, imaging.JPEG_MAX_SIDE), "min_side": fields.Integer(1, imaging.JPEG_MAX_SIDE),
    "jpeg_quality": fields.Integer(1, 100), "split_scheme": fields.Choice(splits.SCHEMES),
    "fractions": fields.Fractions(), "near_duplicate_distance": fields.Integer(0, 64),
    "seed": fields.Integer(0, 2**63 - 1), "strict": fields.Boolean(), "exclusions": fields.Text(),
    "num_workers": fields.Integer(0, 1024), "follow_symlinks_out": fields.Boolean(),
    "labels": fields.Choice(catalog.LABEL_SOURCES),
}


def _configs() -> list[RareSpeciesConfig]:
    sizes = (("inception_342", 342, "InceptionV3, Xception, InceptionResNetV2, EfficientNetB2/B3 (299-px crops)"),
             ("standard_256", 256, "224-px backbones (ResNet50V2, MobileNetV2, DenseNet121, EfficientNetB0/B1, "
                                   "ConvNeXt)"),
             ("small_128", 128, "the from-scratch baseline CNN, the CPU demo and tests"))
    configs = []
    for scheme, suffix, what in (("stratified", "", "stratified by family"),
                                 ("species_disjoint", "_species_disjoint",
                                  "validation/test species never in train (one-species families split by image)")):
        for name, side, use in sizes:
            configs.append(RareSpeciesConfig(name=name + suffix, short_side=side, split_scheme=scheme,
                                             description=f"short side {side} px for {use}; {what}."))
    return configs


class Builder(tfds.core.GeneratorBasedBuilder):
    """DatasetBuilder for rare_species."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {"1.0.0": "Initial release.",
                     "1.1.0": "Every rank a ClassLabel (class, order, genus, species beside phylum and family; the "
                              "text feature taxon_class is now the ClassLabel class); ranks a course download "
                              "lacks are filled from the shipped taxonomy, -1 for a row outside it."}
    BUILDER_CONFIGS = _configs()
    DEFAULT_CONFIG_NAME = "inception_342"
    MANUAL_DOWNLOAD_INSTRUCTIONS = _MANUAL_DOWNLOAD_INSTRUCTIONS
    # (beam_options, beam_runner) of the download_config: either one set picks the Beam executor.
    _beam = (None, None)

    def __init__(self, *, config=None, **kwargs):
        """TFDS' builder; a config of our own class named like a shipped one is refused in one line (TFDS' own
        refusal is a ValueError over several lines, after the JSON config was accepted). Case does not count:
        on a case-insensitive disk (macOS, Windows) `Small_128` is the folder of `small_128`."""
        with errors.one_line_under_tfds_build():
            name = getattr(config, "name", None)
            shipped = {c.name: c for c in self.BUILDER_CONFIGS}.get(name.lower() if isinstance(name, str) else None)
            if isinstance(config, RareSpeciesConfig) and shipped is not None and config is not shipped:
                raise errors.BuildError(
                    f"--config={config.name}: that name is a shipped config's; give yours a new name (e.g. "
                    f'"name": "{config.name}_mine"), or pass --config={config.name} to build the shipped one')
        super().__init__(config=config, **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        """The features; with labels from the metadata the rank ClassLabels get their names once the download
        is read (_split_generators), and a built dataset restores them from its label files."""
        text = tfds.features.Text()
        shipped = self.builder_config.labels == "shipped"
        features = {
            "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
            "file_name": text,
            "rare_species_id": text,
            "eol_content_id": np.int64,
            "eol_page_id": np.int64,
            "kingdom": tfds.features.ClassLabel(names=labels.KINGDOMS if shipped else None),
            **{rank: tfds.features.ClassLabel(names=labels.names(rank) if shipped else None)
               for rank in labels.RANKS},
            **{name: text for name in ("common_name", "license_name", "copyright_owner", "source_url")},
            "original_width": np.int32,
            "original_height": np.int32,
            "content_sha256": text,
            "phash": text,
        }
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(features),
            supervised_keys=("image", "family"),
            homepage="https://huggingface.co/datasets/imageomics/rare-species",
            metadata=tfds.core.MetadataDict(),
        )

    def download_and_prepare(self, **kwargs) -> None:
        """TFDS' download_and_prepare; under `tfds build` a BuildError ends the command in one line instead of a
        traceback (errors.py says why here), while a library caller still gets the exception."""
        download_config = kwargs.get("download_config") or tfds.download.DownloadConfig()
        self._beam = (download_config.beam_options, download_config.beam_runner)
        with errors.one_line_under_tfds_build(), errors.raised_by_beam_workers():
            _check_folders({"--data_dir": self.data_dir_root, "--manual_dir": download_config.manual_dir,
                            "--download_dir": kwargs.get("download_dir"),
                            "--extract_dir": download_config.extract_dir})
            if not sys.stderr.isatty():
                # TFDS' bars drawn into a pipe or a log are left as 0% lines (`make demo`); ours reach 100%.
                tfds.display_progress_bar(False)
            with _disk_full_as_build_error(self.data_dir_root), _finished_first_elsewhere(self):
                super().download_and_prepare(**kwargs)

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        config: RareSpeciesConfig = self.builder_config
        manual_dir = _manual_dir(dl_manager)
        download = catalog.read_download(*_locate(dl_manager, manual_dir), label_source=config.labels)
        self._store_taxonomy(download)
        table = download.table.copy()
        table["status"], table["reason"], table["detail"], table["split"] = "", "", "", ""
        unmatched = _apply_exclusions(table, _exclusions_path(config, download.root))
        _mark_missing(table)
        if not config.follow_symlinks_out:
            _skip_links_out(table, (manual_dir, download.root))

        # The decoded JPEGs wait in the dataset's own folder, which TFDS made for this build alone (incomplete.*,
        # removed whole if the build fails): nothing is written outside the folder the user named.
        scratch = pathlib.Path(self.data_dir) / SCRATCH
        jobs = _jobs(table, scratch)
        finish = functools.partial(_finish, table=table, download=download, unmatched=unmatched, config=config,
                                   data_dir=self.data_dir)
        if any(option is not None for option in self._beam):
            return _beam_split_transforms(jobs, finish, config, _beam_executor(*self._beam))
        scratch.mkdir()
        outcomes = preparing.prepare_all(jobs, config.short_side, config.jpeg_quality, config.num_workers,
                                         config.min_side)
        table = finish(list(outcomes), executor={"name": "local",
                                                 "workers": preparing.worker_count(config.num_workers)})
        self.info.metadata["build_report"] = _summary(self.data_dir)
        return {split: self._generate_examples(table[table["split"] == split], scratch) for split in splits.SPLITS}

    def _store_taxonomy(self, download: catalog.Download) -> None:
        """The build's label lists (into the ClassLabels, when read from the metadata) and its tree (into the
        dataset's metadata, where pipelines and the trainer read it), before any example is encoded."""
        if self.builder_config.labels == "from_metadata":
            self.info.features["kingdom"].names = sorted(download.table["kingdom"].unique())
            for rank in labels.RANKS:
                self.info.features[rank].names = list(download.taxonomy.names(rank))
        self.info.metadata[labels.METADATA_KEY] = download.taxonomy.to_text()

    def _generate_examples(self, rows: pd.DataFrame, scratch: pathlib.Path):
        """Yields the prepared JPEG of each written row, removing its scratch file once read, and the scratch
        folder once the last split has read its last file."""
        for row in rows.to_dict(orient="records"):  # not itertuples: "class" is no attribute name
            jpeg = pathlib.Path(row["prepared"])
            example = _example(row, jpeg.read_bytes())
            jpeg.unlink()
            yield row["file_name"], example
        with contextlib.suppress(OSError):  # not empty yet: a later split's files are still there
            scratch.rmdir()

    def _process_pipeline_result(self, pipeline_result) -> None:
        """After a Beam build: the report its assignment stage wrote, into the dataset's metadata."""
        del pipeline_result
        self.info.metadata["build_report"] = _summary(self.data_dir)


def _example(row: dict, jpeg: bytes) -> dict:
    """The stored example of a written row, whichever executor prepared its JPEG."""
    return {
        "image": jpeg,
        **{name: row[name] for name in (
            "file_name", "rare_species_id", "eol_content_id", "eol_page_id", "kingdom", "phylum",
            "family", "common_name", "license_name", "copyright_owner", "source_url", "original_width",
            "original_height", "content_sha256", "phash")},
        **{rank: row[rank] or -1 for rank in catalog.LOWER_RANKS},  # -1: unplaced (TFDS' "no label")
    }


def _finish(outcomes: list[preparing.Outcome], table: pd.DataFrame, download: catalog.Download,
            unmatched: list[str], config: RareSpeciesConfig, data_dir: str, executor: dict) -> pd.DataFrame:
    """Everything between decoding and the examples, for both executors: outcomes into the table, the strict
    and md5 checks, duplicate groups, splits, and the build report (checked, written into data_dir with the
    executor named, printed). Returns the table with its splits. Outcomes may come in any order (Beam's);
    they are taken in row order, so the first md5 mismatch named is the same whichever executor ran."""
    row_of = {name: i for i, name in enumerate(table["file_name"])}
    outcomes = {outcome.file_name: outcome for outcome in sorted(outcomes, key=lambda o: row_of[o.file_name])}
    table = table.copy()
    _raise_on_md5_mismatch(outcomes, table, download.metadata_path)
    _record_outcomes(table, outcomes)
    if config.strict and (table["status"] == "skipped").any():
        row = table[table["status"] == "skipped"].iloc[0]
        raise errors.BuildError(f"{download.metadata_path}: row {row['row']}: {row['file_name']} skipped "
                                f"({row['reason']}: {row['detail']}); strict build: fix or exclude the file")
    written = table[table["status"] == "written"]
    groups = splits.duplicate_groups(written["file_name"].tolist(), written["family"].tolist(),
                                     written["content_sha256"].tolist(), written["phash"].tolist(),
                                     max_distance=config.near_duplicate_distance)
    table.loc[written.index, "split"] = _assign_splits(written, groups, config)
    build_report = _make_report(download, table, groups, unmatched, config, executor)
    build_report.check()
    build_report.write(pathlib.Path(data_dir))
    print(build_report.format(), flush=True)
    return table


def _summary(data_dir: str) -> dict:
    """The build report's summary for dataset_info.json: build_report.json without its file lists."""
    payload = json.loads((pathlib.Path(data_dir) / report.JSON_NAME).read_text())
    return {key: value for key, value in payload.items() if key not in report.LISTS}


def _beam_executor(options, runner) -> dict:
    """The Beam executor as the report names it: its runner and the options set (not the defaults)."""
    named = options.get_all_options(drop_default=True) if options is not None else {}
    if runner is not None:
        named["runner"] = runner if isinstance(runner, str) else type(runner).__name__
    return {"name": "beam", "options": named}


def _beam_split_transforms(jobs: list[preparing.Job], finish, config: RareSpeciesConfig, executor: dict) -> dict:
    """The Beam executor: one stage decodes every file (preparing.prepare, the local executor's function), one
    runs `finish` over all outcomes (the splits need every hash), and each split's examples are the decoded
    files its split holds; TFDS writes the shards. The shared stages are built once, by the first split that
    TFDS expands."""
    beam = tfds.core.lazy_imports.apache_beam
    shared = {}

    def stages(pipeline):
        if not shared:
            prepared = (pipeline | "Files" >> beam.Create(jobs)
                        | "Prepare" >> beam.Map(preparing.prepare, config.short_side, config.jpeg_quality,
                                                config.min_side))
            assigned = (prepared | "Outcomes" >> beam.Map(operator.itemgetter(0))
                        | "AllOutcomes" >> beam.combiners.ToList()
                        | "Assign" >> beam.Map(_assigned_splits, finish, executor))
            shared.update(prepared=prepared, assigned=beam.pvalue.AsSingleton(assigned))
        return shared["prepared"], shared["assigned"]

    @beam.ptransform_fn
    def examples(pbegin, split):
        prepared, assigned = stages(pbegin.pipeline)
        return prepared | beam.FlatMap(_split_examples, split, assigned)

    return {split: examples(split) for split in splits.SPLITS}


def _assigned_splits(outcomes: list[preparing.Outcome], finish, executor: dict) -> dict[str, dict]:
    """file name -> row (with its split) of every written row: the Beam examples' side input. A user error is
    raised as a plain BuildError, the class errors.raised_by_beam_workers finds in the driver."""
    try:
        table = finish(outcomes, executor=executor)
    except errors.BuildError as error:
        raise errors.BuildError(str(error)) from None
    return {row["file_name"]: row for row in table[table["status"] == "written"].to_dict(orient="records")}


def _split_examples(prepared: tuple[preparing.Outcome, bytes], split: str, assigned: dict[str, dict]):
    """(key, example) of a decoded file when its row is written into `split`."""
    outcome, jpeg = prepared
    row = assigned.get(outcome.file_name)
    if row is not None and row["split"] == split:
        yield outcome.file_name, _example(row, jpeg)


def _check_folders(folders: dict) -> None:
    """Refuses a folder flag starting with `~` before anything is read or written: the shell leaves `~` as it
    is after `=` (`--data_dir=~/x`), and TFDS takes it literally (a folder named `~` in the working
    directory), so the build would write there while a user means their home; a file where a folder belongs
    (--manual_dir=the zip itself) is refused too."""
    for flag, folder in folders.items():
        if folder is None:
            continue
        text = str(folder)
        if text.startswith("~"):
            home = text == "~" or text.startswith("~/")  # ~user/... is another user's home: no $HOME form
            instead = f"{flag}=$HOME/{text[2:]}" if home else f"the absolute path in {flag}"
            raise errors.BuildError(f"{flag}={folder}: starts with ~, which the shell does not expand after = and "
                                    f"TFDS takes literally; write {instead}")
        if pathlib.Path(folder).is_file():
            raise errors.BuildError(f"{flag}={folder}: a file, not a folder; pass the folder holding it "
                                    f"({flag}={pathlib.Path(folder).absolute().parent})")


@contextlib.contextmanager
def _finished_first_elsewhere(builder: Builder):
    """Two builds of one config into one data_dir at once each build in their own incomplete.* folder; the
    one that ends second cannot rename its folder onto the first one's dataset (TFDS' FileExistsError, a
    traceback): one line saying the dataset is there and complete."""
    try:
        yield
    except FileExistsError:
        if not (pathlib.Path(builder.data_dir) / "dataset_info.json").exists():
            raise
        raise errors.BuildError(
            f"{builder.data_dir}: another build of rare_species/{builder.builder_config.name} finished there while "
            "this one ran; that dataset is complete and kept, this copy was dropped; run one build per config "
            "and data_dir at a time") from None


@contextlib.contextmanager
def _disk_full_as_build_error(data_dir):
    """A full disk (or quota) while the build writes is the machine's state, not a bug: one line naming where."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise errors.BuildError(f"{exc.filename or data_dir}: no space left on the disk; free space there, or "
                                "build into a --data_dir on a disk with room") from None
    except Exception as exc:  # TensorFlow's file writers carry the OS error's words, not its errno
        if os.strerror(errno.ENOSPC) not in str(exc):
            raise
        raise errors.BuildError(f"{data_dir}: no space left on the disk while writing the dataset; free space "
                                "there, or build into a --data_dir on a disk with room") from None


def _manual_dir(dl_manager: tfds.download.DownloadManager) -> pathlib.Path:
    """--manual_dir; TFDS' own refusal of a missing or empty one is an AssertionError with the instructions
    over several lines, so it becomes a one-line error naming the flag (a file there was refused before)."""
    try:
        return pathlib.Path(dl_manager.manual_dir)
    except AssertionError:
        raise errors.BuildError(
            "--manual_dir: not given, or the folder does not exist or is empty; pass --manual_dir=PATH of the "
            "Rare Species download (the zip or its extracted folder)") from None


def _locate(dl_manager: tfds.download.DownloadManager, manual_dir: pathlib.Path) -> tuple[pathlib.Path, str]:
    """The download root and layout inside manual_dir, extracting a zip there when that is what it holds. Two
    downloads there (two metadata files, two zips, or a folder and a zip) are refused, naming them: the build
    would otherwise pick one without a word."""
    roots = catalog.find_roots(manual_dir)
    archives = sorted(manual_dir.glob("*.zip"))
    _refuse_several([str(root.relative_to(manual_dir) / _metadata_name(layout)) for root, layout in roots]
                    + [archive.name for archive in archives], manual_dir)
    if archives:
        extracted = pathlib.Path(dl_manager.extract(archives[0]))
        roots = catalog.find_roots(extracted)
        _refuse_several([f"{archives[0].name}: {root.relative_to(extracted) / _metadata_name(layout)}"
                         for root, layout in roots], manual_dir)
    if not roots:
        raise catalog.MetadataError(
            f"{manual_dir}: no {catalog.COURSE_METADATA} or {catalog.IMAGEOMICS_METADATA} found (nor a zip "
            "holding one); point --manual_dir at the Rare Species download")
    return roots[0]


def _metadata_name(layout: str) -> str:
    return catalog.COURSE_METADATA if layout == "course" else catalog.IMAGEOMICS_METADATA


def _refuse_several(downloads: list[str], manual_dir: pathlib.Path) -> None:
    if len(downloads) > 1:
        shown = ", ".join(downloads[:3]) + (f" and {len(downloads) - 3} more" if len(downloads) > 3 else "")
        raise errors.BuildError(f"--manual_dir={manual_dir}: holds {len(downloads)} downloads ({shown}); move all "
                                "but one out, or point --manual_dir at the folder of the one to build")


def _mark_missing(table: pd.DataFrame) -> None:
    """Rows without a file to read: none of that name (no_file), or several and none at the metadata's path
    (ambiguous_name: the build does not pick one; the report lists them)."""
    pending = table["status"] == ""
    table.loc[pending & (table["found"] == "ambiguous"), ["status", "reason", "detail"]] = [
        "missing", "ambiguous_name", ("several files carry this name and none is at the metadata's path; move "
                                      "the right one there (build_report.json lists them under "
                                      "same_name_file_names)")]
    table.loc[(table["status"] == "") & table["path"].isna(), ["status", "reason"]] = ["missing", "no_file"]


def _skip_links_out(table: pd.DataFrame, download_dirs: tuple[pathlib.Path, ...]) -> None:
    """Skips, as `outside_download`, the rows whose file resolves outside every download folder (a symlink
    out of the download: the build would read, hash and store whatever it points at). The detail names no
    target: the report carries neither file contents nor paths outside the download."""
    inside = tuple(folder.resolve() for folder in download_dirs)
    pending = table.index[(table["status"] == "") & table["path"].notna()]
    outside = [i for i in pending if _resolves_outside(pathlib.Path(table.at[i, "path"]), inside)]
    table.loc[outside, ["status", "reason", "detail"]] = [
        "skipped", "outside_download",
        "a symlink to a file outside --manual_dir; set the config field follow_symlinks_out to read it"]


def _resolves_outside(path: pathlib.Path, folders: tuple[pathlib.Path, ...]) -> bool:
    """Whether path, all links followed, lies outside every folder; a link loop (or a folder on the way that
    cannot be listed) cannot be followed, so it is left to the reader, which reports it (`read_error`)."""
    try:
        target = path.resolve()
    except (RuntimeError, OSError):
        return False
    return not any(target.is_relative_to(folder) for folder in folders)


def _assign_splits(written: pd.DataFrame, groups: list[int], config: RareSpeciesConfig) -> list[str]:
    """splits.assign_splits over the written rows; a subset too small for the config's rules is a user error
    naming the config and what to build instead."""
    try:
        return splits.assign_splits(
            written["file_name"].tolist(), written["family"].tolist(), groups, fractions=config.fractions,
            species=written["eol_page_id"].astype(str).tolist(), scheme=config.split_scheme, seed=config.seed)
    except splits.TooFewToSplit as exc:
        raise errors.BuildError(f"--config={config.name}: {exc}; {_split_advice(config, exc)}") from None


def _split_advice(config: RareSpeciesConfig, problem: splits.TooFewToSplit) -> str:
    """What to do when the download is too small for a config's split: a family with fewer images than splits
    fails every config, so it needs more images or none; when species (or duplicate groups) are too few, the
    stratified twin of a species-disjoint config needs fewer."""
    if config.split_scheme == "species_disjoint" and not isinstance(problem, splits.TooFewImages):
        twin = config.name.removesuffix("_species_disjoint")
        named = {c.name for c in Builder.BUILDER_CONFIGS}
        target = f"--config={twin}" if twin in named else 'a config with "split_scheme": "stratified"'
        return f"build the stratified split instead ({target}), or a download with more species per family"
    return ("add images of those families, or leave them out (exclusions.csv in the download); "
            "near duplicates count as one image (config field near_duplicate_distance)")


def _exclusions_path(config: RareSpeciesConfig, root: pathlib.Path) -> pathlib.Path | None:
    if config.exclusions:
        path = pathlib.Path(os.path.expanduser(config.exclusions))
        if not path.is_file():
            raise errors.BuildError(f"--config={config.name}: field exclusions: {path} is not a file; name an "
                                    "exclusion CSV (rare_species_id,reason) or leave the field empty")
        return path
    default = root / catalog.EXCLUSIONS_FILE
    return default if default.exists() else None


def _apply_exclusions(table: pd.DataFrame, path: pathlib.Path | None) -> list[str]:
    """Marks excluded rows; returns the exclusion ids that match no row (reported, never silently dropped)."""
    if path is None:
        return []
    exclusions = catalog.read_exclusions(path)
    hit = table["rare_species_id"].isin(exclusions)
    table.loc[hit, "status"] = "excluded"
    table.loc[hit, "reason"] = table.loc[hit, "rare_species_id"].map(exclusions)
    return sorted(set(exclusions) - set(table["rare_species_id"]))


def _jobs(table: pd.DataFrame, scratch: pathlib.Path) -> list[preparing.Job]:
    """A job per row still to decode; its scratch target goes into the table's "prepared" column."""
    todo = table[table["status"] == ""]
    jobs = [preparing.Job(row.file_name, str(row.path), str(scratch / f"{i}.jpg"), row.md5)
            for i, row in enumerate(todo.itertuples(index=False))]
    table["prepared"] = ""
    table.loc[todo.index, "prepared"] = [job.target for job in jobs]
    return jobs


def _raise_on_md5_mismatch(outcomes: dict, table: pd.DataFrame, metadata_path: pathlib.Path) -> None:
    for outcome in outcomes.values():
        if outcome.reason == "md5_mismatch":
            row = table.loc[table["file_name"] == outcome.file_name, "row"].iloc[0]
            raise catalog.MetadataError(
                f"{metadata_path.parent / 'licenses.csv'}: row for {outcome.file_name} (catalog row {row}): "
                f"column md5: {outcome.detail}; the file is corrupt or not the one listed: download it again")


def _record_outcomes(table: pd.DataFrame, outcomes: dict) -> None:
    for column, target, missing in (("width", "original_width", 0), ("height", "original_height", 0),
                                    ("content_sha256", "content_sha256", ""), ("phash", "phash", "")):
        values = {name: getattr(outcome, column) for name, outcome in outcomes.items()}
        table[target] = table["file_name"].map(values).fillna(missing)
    status = table["file_name"].map({name: "written" if o.ok else "skipped" for name, o in outcomes.items()})
    reason = table["file_name"].map({name: o.reason for name, o in outcomes.items()})
    detail = table["file_name"].map({name: o.detail for name, o in outcomes.items()})
    prepared = table["file_name"].isin(outcomes)
    table.loc[prepared, "status"] = status[prepared]
    table.loc[prepared, "reason"] = reason[prepared]
    table.loc[prepared, "detail"] = detail[prepared]


def _make_report(download: catalog.Download, table: pd.DataFrame, groups: list[int], unmatched: list[str],
                 config: RareSpeciesConfig, executor: dict) -> report.BuildReport:
    written = table[table["status"] == "written"]
    group_sizes = pd.Series(groups).value_counts()
    fallback = (splits.species_disjoint_fallback_families(written["family"].tolist(),
                                                           written["eol_page_id"].astype(str).tolist())
                if config.split_scheme == "species_disjoint" else [])
    return report.BuildReport(
        metadata_path=str(download.metadata_path), layout=download.layout,
        rows=table[list(report.ROW_COLUMNS)].reset_index(drop=True),
        unnamed_files=download.unnamed_files,
        same_name_files=download.same_name_files,
        found_elsewhere=download.found_elsewhere,
        unmatched_exclusions=unmatched,
        species_fallback_families=fallback,
        duplicate_groups=int((group_sizes > 1).sum()),
        images_in_duplicate_groups=int(group_sizes[group_sizes > 1].sum()),
        taxonomy_source=download.taxonomy_source, unplaced_written=int(catalog.unplaced(written).sum()),
        label_source=config.labels,
        label_counts={rank: len(download.taxonomy.names(rank)) for rank in labels.RANKS},
        executor=executor)
