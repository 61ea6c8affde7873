"""Label lists and the tree that joins them: the taxonomy shipped with the builder, or one a build reads off its
download (the config field `labels="from_metadata"`).

The shipped table has one row per species (EOL page) with its six ranks, made once from the real metadata and
Imageomics' annotation (CC0): 400 species, 316 genera, 202 families, 85 orders, 15 classes, 5 phyla, a strict
tree. Shipping it (rather than reading the lists off a download) keeps label ids identical across builds,
subsets and machines, so a model trained on one build reads another; and it fills the ranks of a course
download that came without rare_species_taxonomy.csv.

A `Taxonomy` is the distinct paths (phylum ... species, "" where a rank is unknown) of a collection; each rank's
label list is that rank's names, sorted, so the paths alone define the label ids. The builder stores its paths
in the dataset's metadata and training copies them into the run (trainer/training/run_dir.py), so every reader of a
dataset or a model takes names and ancestors from there, whichever collection it came from.
"""

import dataclasses
import functools
import io
from importlib import resources

import pandas as pd

KINGDOMS = ("animalia",)
RANKS = ("phylum", "class", "order", "family", "genus", "species")
TAXONOMY_FILE = "taxonomy.tsv"
METADATA_KEY = "taxonomy"  # the dataset metadata entry holding a build's Taxonomy.to_text()


@dataclasses.dataclass(frozen=True, eq=False)
class Taxonomy:
    """The distinct root-to-leaf paths of a collection: columns RANKS, "" where a path's rank is unknown (a
    row outside the tree keeps only its phylum and family)."""

    paths: pd.DataFrame

    @classmethod
    def of_rows(cls, rows: pd.DataFrame) -> "Taxonomy":
        """The taxonomy of catalog rows (any columns besides RANKS are ignored)."""
        paths = rows[list(RANKS)].fillna("").astype(str).drop_duplicates()
        return cls(paths.sort_values(list(RANKS)).reset_index(drop=True))

    @classmethod
    def from_text(cls, text: str) -> "Taxonomy":
        """A taxonomy written by `to_text` (tab-separated, a header of the six ranks)."""
        frame = pd.read_csv(io.StringIO(text), sep="\t", dtype=str, keep_default_na=False)
        missing = [rank for rank in RANKS if rank not in frame.columns]
        if missing:
            raise ValueError(f"not a taxonomy table: no column {', '.join(missing)}")
        return cls.of_rows(frame)

    def to_text(self) -> str:
        return self.paths.to_csv(sep="\t", index=False)

    @functools.cached_property
    def _names(self) -> dict[str, tuple[str, ...]]:
        return {rank: tuple(sorted(set(self.paths[rank]) - {""})) for rank in RANKS}

    def names(self, rank: str) -> tuple[str, ...]:
        """The label list of a rank: label id i is names(rank)[i]."""
        if rank not in RANKS:
            raise ValueError(f"unknown rank {rank!r}: one of {', '.join(RANKS)}")
        return self._names[rank]

    def ancestors(self, rank: str) -> pd.DataFrame:
        """One row per name of the rank (in label-id order) with its names at the ranks above, as columns;
        only the ranks every name of the rank has (a collection whose lower ranks are partly unknown gets a
        shallower tree, never an empty name in it)."""
        above = list(RANKS[:RANKS.index(rank)])
        named = self.paths[self.paths[rank] != ""]
        known_first = named.assign(_unknown=(named[above] == "").sum(axis=1)).sort_values("_unknown", kind="stable")
        table = known_first.drop_duplicates(rank).set_index(rank)[above].reindex(list(self.names(rank)))
        complete = [column for column in above if (table[column].fillna("") != "").all()]
        return table[complete]

    def phylum_of(self, rank: str) -> dict[str, str]:
        """Each name of the rank -> its phylum (a phylum is its own)."""
        if rank == "phylum":
            return {name: name for name in self.names(rank)}
        return self.ancestors(rank)["phylum"].to_dict()


@functools.cache
def taxonomy() -> pd.DataFrame:
    """The shipped table: eol_page_id, the six ranks (lower case; species is "genus epithet") and common_name,
    one row per species."""
    with resources.files("tfds_rarespecies").joinpath("rare_species", TAXONOMY_FILE).open() as stream:
        return pd.read_csv(stream, sep="\t", dtype=str, keep_default_na=False).astype({"eol_page_id": "int64"})


@functools.cache
def shipped() -> Taxonomy:
    """The shipped taxonomy, which every config builds with unless it reads its labels from the metadata."""
    return Taxonomy.of_rows(taxonomy())


def names(rank: str) -> tuple[str, ...]:
    """The shipped label list of a rank."""
    return shipped().names(rank)


def families() -> tuple[str, ...]:
    return names("family")


def phyla() -> tuple[str, ...]:
    return names("phylum")


@functools.cache
def ancestors(rank: str) -> pd.DataFrame:
    """The shipped tree's ancestors of a rank's names (Taxonomy.ancestors)."""
    return shipped().ancestors(rank)


def phylum_of(rank: str) -> dict[str, str]:
    """Each shipped name of the rank -> its phylum."""
    return shipped().phylum_of(rank)
