"""The build report: what became of every metadata row, and of every file no row names.

Every row ends as exactly one of written (with its split) / skipped (decode reason) / excluded (exclusion
reason) / missing (no file). `BuildReport.check()` makes the counts add up before anything is written, the
report travels in the dataset's metadata, and `write()` puts it as CSV + JSON beside the TFRecords.
"""

import dataclasses
import hashlib
import json
import pathlib

import pandas as pd

STATUSES = ("written", "skipped", "excluded", "missing")
ROW_COLUMNS = ("row", "rare_species_id", "file_name", "phylum", "family", "status", "reason", "detail", "split")
CSV_NAME = "build_report.csv"
JSON_NAME = "build_report.json"
# The file lists build_report.json holds beside the summary (the dataset's metadata keeps only their counts).
LISTS = {"unnamed_file_names": "unnamed_files", "same_name_file_names": "same_name_files",
         "found_elsewhere_paths": "found_elsewhere"}


class CountsDoNotAddUp(AssertionError):
    """A row was lost or counted twice: a bug in the builder, never the user's data."""


@dataclasses.dataclass
class BuildReport:
    """rows: one per metadata row, columns ROW_COLUMNS; the rest is what a summary needs."""

    metadata_path: str
    layout: str
    rows: pd.DataFrame
    unnamed_files: list[str]
    same_name_files: list[str]  # catalog.Download's: same-named files not read for a row
    found_elsewhere: list[str]  # catalog.Download's: "metadata path -> path read"
    unmatched_exclusions: list[str]
    species_fallback_families: list[str]
    duplicate_groups: int
    images_in_duplicate_groups: int
    taxonomy_source: str
    unplaced_written: int
    label_source: str  # the config's labels: "shipped" or "from_metadata"
    label_counts: dict  # names per rank in the dataset's label lists
    executor: dict  # {"name": "local", "workers": N} or {"name": "beam", "options": {...set options...}}

    def check(self) -> None:
        """Raises CountsDoNotAddUp unless each row has exactly one status and splits hold exactly the written."""
        counts = self.rows["status"].value_counts()
        unknown = set(counts.index) - set(STATUSES)
        if unknown or counts.sum() != len(self.rows) or self.rows["file_name"].duplicated().any():
            raise CountsDoNotAddUp(f"statuses {dict(counts)} do not account for {len(self.rows)} rows")
        written = self.rows["status"] == "written"
        if (self.rows.loc[written, "split"] == "").any() or (self.rows.loc[~written, "split"] != "").any():
            raise CountsDoNotAddUp("a written row has no split, or a row not written has one")

    def summary(self) -> dict:
        """JSON-ready counts: per status, per reason, per split and per split x phylum."""
        written = self.rows[self.rows["status"] == "written"]
        not_written = self.rows[self.rows["status"] != "written"]
        return {
            "metadata": self.metadata_path,
            "layout": self.layout,
            "rows": len(self.rows),
            "status": {status: int((self.rows["status"] == status).sum()) for status in STATUSES},
            "reasons": {f"{status}:{reason}": int(n) for (status, reason), n in
                        not_written.groupby(["status", "reason"]).size().items()},
            "splits": {split: int(n) for split, n in written["split"].value_counts().sort_index().items()},
            "split_digests": split_digests(written),
            "splits_by_phylum": {split: {phylum: int(n) for phylum, n in group["phylum"].value_counts()
                                         .sort_index().items()}
                                 for split, group in written.groupby("split")},
            "families_written": int(written["family"].nunique()),
            "duplicate_groups": self.duplicate_groups,
            "images_in_duplicate_groups": self.images_in_duplicate_groups,
            "unnamed_files": len(self.unnamed_files),
            "same_name_files": len(self.same_name_files),
            "found_elsewhere": len(self.found_elsewhere),
            "unmatched_exclusions": self.unmatched_exclusions,
            "species_disjoint_fallback_families": self.species_fallback_families,
            "taxonomy": {"source": self.taxonomy_source, "unplaced_written": self.unplaced_written,
                         "labels": self.label_source, "names": self.label_counts},
            "executor": self.executor,
        }

    def write(self, directory: pathlib.Path) -> None:
        directory = pathlib.Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.rows.to_csv(directory / CSV_NAME, index=False)
        payload = dict(self.summary(), **{key: getattr(self, attribute) for key, attribute in LISTS.items()})
        (directory / JSON_NAME).write_text(json.dumps(payload, indent=2) + "\n")

    def format(self) -> str:
        """A short human summary for the end of `tfds build`."""
        s = self.summary()
        lines = [f"rare_species build report ({s['layout']} layout, {s['rows']} metadata rows)",
                 "  " + ", ".join(f"{status}: {n}" for status, n in s["status"].items())]
        lines += [f"  {key}: {n}" for key, n in s["reasons"].items()]
        for split, n in s["splits"].items():
            per_phylum = ", ".join(f"{p} {k}" for p, k in s["splits_by_phylum"][split].items())
            lines.append(f"  {split}: {n} images ({per_phylum})")
        lines.append(f"  duplicate groups kept within one split: {s['duplicate_groups']} "
                     f"({s['images_in_duplicate_groups']} images)")
        lines.append(f"  taxonomy (class, order, genus, species) from the {self.taxonomy_source}"
                     + (f"; {self.unplaced_written} written images outside the tree have none (-1)"
                        if self.unplaced_written else ""))
        lines.append(f"  labels {'shipped' if self.label_source == 'shipped' else 'from the metadata'}: "
                     + ", ".join(f"{rank} {n}" for rank, n in self.label_counts.items()))
        if self.unnamed_files:
            lines.append(f"  files on disk that no metadata row names: {len(self.unnamed_files)} "
                         f"(first: {self.unnamed_files[0]})")
        if self.same_name_files:
            lines.append(f"  files named like a row's file but not read for it: {len(self.same_name_files)} "
                         f"(first: {self.same_name_files[0]})")
        if self.found_elsewhere:
            lines.append(f"  files read from elsewhere than their metadata path: {len(self.found_elsewhere)} "
                         f"(first: {self.found_elsewhere[0]})")
        if self.unmatched_exclusions:
            lines.append(f"  exclusion ids that match no row: {len(self.unmatched_exclusions)}")
        if self.species_fallback_families:
            lines.append(f"  one-species families split by image, not species: "
                         f"{len(self.species_fallback_families)}")
        lines.append(f"  executor: {_describe(self.executor)}")
        return "\n".join(lines)


def _describe(executor: dict) -> str:
    """The executor in the printed report's words."""
    if executor["name"] == "local":
        return f"local, {executor['workers']} worker processes"
    return "beam, " + ", ".join(f"{key}={value}" for key, value in executor["options"].items())


def split_digests(written: pd.DataFrame) -> dict[str, str]:
    """Per split, the sha256 of its sorted file names: what a run records to know later whether the dataset it
    is resumed or rescored on holds the same splits (a rebuild with other splits changes it)."""
    return {split: hashlib.sha256("\n".join(sorted(group["file_name"])).encode()).hexdigest()
            for split, group in written.groupby("split")}
