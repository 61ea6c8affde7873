"""The taxonomy shipped with the builder: one row per species (EOL page) with its six ranks, made once from the
real metadata and Imageomics' annotation (CC0): 400 species, 316 genera, 202 families, 85 orders, 15 classes,
5 phyla, a strict tree.

Each rank's label list is that rank's names, sorted. Shipping the table (rather than reading the lists off a
download) keeps label ids identical across builds, subsets and machines, so a model trained on one build reads
another; and it fills the ranks of a course download that came without rare_species_taxonomy.csv.
"""

import functools
from importlib import resources

import pandas as pd

KINGDOMS = ("animalia",)
RANKS = ("phylum", "class", "order", "family", "genus", "species")
TAXONOMY_FILE = "taxonomy.tsv"


@functools.cache
def taxonomy() -> pd.DataFrame:
    """eol_page_id, the six ranks (lower case; species is "genus epithet") and common_name, one row per species."""
    with resources.files("tfds_rarespecies").joinpath("rare_species", TAXONOMY_FILE).open() as stream:
        return pd.read_csv(stream, sep="\t", dtype=str, keep_default_na=False).astype({"eol_page_id": "int64"})


@functools.cache
def names(rank: str) -> tuple[str, ...]:
    """The label list of a rank: label id i is names(rank)[i]."""
    if rank not in RANKS:
        raise ValueError(f"unknown rank {rank!r}: one of {', '.join(RANKS)}")
    return tuple(sorted(taxonomy()[rank].unique()))


def families() -> tuple[str, ...]:
    return names("family")


def phyla() -> tuple[str, ...]:
    return names("phylum")


@functools.cache
def ancestors(rank: str) -> pd.DataFrame:
    """One row per name of the rank (in label-id order) with the names of every rank above it, as columns."""
    above = RANKS[:RANKS.index(rank) + 1]
    table = taxonomy()[list(above)].drop_duplicates(rank).set_index(rank)
    return table.reindex(names(rank))


def phylum_of(rank: str) -> dict[str, str]:
    """Each name of the rank -> its phylum (a phylum is its own)."""
    if rank == "phylum":
        return {name: name for name in names(rank)}
    return ancestors(rank)["phylum"].to_dict()
