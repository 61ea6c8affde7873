"""Label lists shipped with the builder, made once from the real metadata (202 families, 5 phyla).

Shipping the lists (rather than reading them off a download) keeps label ids identical across builds,
subsets and machines, so a model trained on one build reads another.
"""

import functools
from importlib import resources

KINGDOMS = ("animalia",)


def _read_lines(file_name: str) -> tuple[str, ...]:
    text = resources.files("tfds_rarespecies").joinpath("rare_species", file_name).read_text()
    return tuple(line.strip() for line in text.splitlines() if line.strip())


@functools.cache
def families() -> tuple[str, ...]:
    return _read_lines("families.txt")


@functools.cache
def phyla() -> tuple[str, ...]:
    return _read_lines("phyla.txt")


@functools.cache
def family_to_phylum() -> dict[str, str]:
    """Each family belongs to exactly one phylum; the table is `family<TAB>phylum` per line."""
    return dict(line.split("\t") for line in _read_lines("family_phylum.tsv"))
