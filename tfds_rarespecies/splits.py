"""Deterministic, duplicate-aware train/validation/test splits of the Rare Species images.

Every decision depends only on the items themselves (key = image base name, family, species, hashes) and a
seed, never on row order, Python's `hash()` or a global RNG, so one download splits identically on every
machine and Python version. Order among equals comes from sha256(f"{seed}:{key}"). Duplicate groups (same
bytes anywhere, or near-identical perceptual hashes within a family) are placed whole, so no picture is seen
in training and again in evaluation.
"""

import collections
import hashlib
import itertools
import math
from collections.abc import Hashable, Iterable, Iterator, Sequence

import pandas as pd

from tfds_rarespecies import near_duplicates

SPLITS = ("train", "validation", "test")
SCHEMES = ("stratified", "species_disjoint")

# Two images of one family count as near duplicates when their 64-bit `imagehash.phash` values differ in at
# most 4 bits. Re-encoded, resized or lightly retouched copies of one photo land within a few bits of each
# other, while unrelated photos differ in about 32 (a random pair is within 4 bits with odds ~4e-14), so a
# tight threshold catches copies without merging merely similar shots (same pose, plain background) of a family.
NEAR_DUPLICATE_MAX_DISTANCE = 4


class TooFewToSplit(ValueError):
    """Some families have too few images, duplicate groups or species for the split's rules; the message names
    the first few (sorted) and counts the rest, so it stays one line on a small subset where most fail."""

    SHOWN = 5

    def __init__(self, problem: str, families: list[str]):
        more = f" and {len(families) - self.SHOWN} more" if len(families) > self.SHOWN else ""
        super().__init__(f"{problem}: {', '.join(families[:self.SHOWN])}{more}")


class TooFewImages(TooFewToSplit):
    """Some families have fewer images than there are splits: no scheme can split them, unlike a family whose
    species or duplicate groups are too few for one scheme only."""


def duplicate_groups(keys: Sequence[str], families: Sequence[str], content_sha256: Sequence[str],
                     phash: Sequence[str], max_distance: int = NEAR_DUPLICATE_MAX_DISTANCE) -> list[int]:
    """Group id per item, so that copies of one picture can be kept in one split.

    Items share a group when their content hashes are equal (in any family: the same file filed twice) or
    their perceptual hashes (16 hex digits) are at most max_distance bits apart within one family (across
    families, similar-looking pictures are different subjects); transitively. The near pairs come from
    near_duplicates.pairs, an index whose work grows near-linearly with the images, not pairwise per family.
    Ids number the groups in sorted order of their smallest key, so they do not depend on row order.
    """
    _check_lengths(keys=keys, families=families, content_sha256=content_sha256, phash=phash)
    _check_unique(keys)
    near = near_duplicates.pairs(families, near_duplicates.hashes_from_hex(phash), max_distance).tolist()
    roots = _components(len(keys), itertools.chain(_same_label_pairs(content_sha256), near))
    smallest: dict[int, str] = {}
    for key, root in zip(keys, roots):
        smallest[root] = min(smallest.get(root, key), key)
    number = {key: i for i, key in enumerate(sorted(smallest.values()))}
    return [number[smallest[root]] for root in roots]


def assign_splits(keys: Sequence[str], families: Sequence[str], groups: Sequence[int],
                  fractions: Sequence[float] = (0.8, 0.1, 0.1), species: Sequence[str] | None = None,
                  scheme: str = "stratified", seed: int = 0) -> list[str]:
    """Split name (one of SPLITS) per item.

    Each family is split on its own at `fractions` (train, validation, test). Target counts are the
    largest-remainder rounding of fraction * n (each within 1 image of fraction * n), raised to at least one
    image per split so every family is in every split (which breaks the ±1 bound only below half an image,
    e.g. families under 5 images at 10%). Units are placed whole, largest first (ties in
    sha256(f"{seed}:{smallest key}") order), each into the split furthest below its target, the last ones
    into any split still empty. With single-image units this meets the targets exactly (29 images: 23/3/3);
    a unit of k images can push its family about k images off target, and further when a family has only a
    few units to cover the three splits (three groups of 10 go 10/10/10).

    "stratified": a unit is a duplicate group. "species_disjoint": in a family with 2+ species a unit is a
    species with its duplicate groups, so no validation or test species is in train. With 3+ units the fill
    above puts at least one whole species in each split; with exactly 2, the larger goes to train and the
    smaller is divided between validation and test (by duplicate group), which keeps both unseen in training
    at the price of a family far from the fractions (30+30 images: 30/15/15). One-species families cannot be
    species-disjoint and fall back to the stratified split (see species_disjoint_fallback_families).

    Families are filled in sorted order; a duplicate group spanning families is placed with the first and
    counted as already placed by the others. Raises TooFewImages naming the families with fewer than 3
    images, TooFewToSplit those whose units are too few to reach all three splits; ValueError for
    inconsistent arguments.
    """
    _check_split_inputs(keys, families, groups, fractions, species, scheme)
    units, multi_species = list(groups), set()
    if scheme == "species_disjoint":
        multi_species = set(families).difference(species_disjoint_fallback_families(families, species))
        units = _species_units(families, species, groups, multi_species)
    unit_members = _indices_by(units)
    split_of: list[int | None] = [None] * len(keys)

    def put(members: list[int], split: int) -> None:
        for i in members:
            split_of[i] = split

    for family, items in sorted(_indices_by(families).items()):
        free = _largest_first({units[i] for i in items if split_of[i] is None}, unit_members, items, keys, seed)
        if family in multi_species and len(free) == 2 == len({units[i] for i in items}):
            (larger, _), (smaller, size) = free
            put(unit_members[larger], 0)
            for members, split in _two_species_held_out(unit_members[smaller], size, groups, items, keys,
                                                        fractions, seed):
                put(members, split)
        else:
            counts = collections.Counter(split_of[i] for i in items if split_of[i] is not None)
            targets = dict(enumerate(_target_counts(len(items), fractions)))
            chosen = _fill([n for _, n in free], {s: counts[s] for s in targets}, targets)
            for (unit, _), split in zip(free, chosen):
                put(unit_members[unit], split)
    _check_every_split(families, split_of, scheme)
    return [SPLITS[s] for s in split_of]


def _two_species_held_out(members: list[int], size: int, groups: Sequence[int], items: list[int],
                          keys: Sequence[str], fractions: Sequence[float], seed: int) -> list[tuple[list[int], int]]:
    """The smaller species of a two-species family divided between validation (1) and test (2) by duplicate
    group, at their share of the fractions: (members, split) per group."""
    group_members = _indices_by(groups)
    atoms = _largest_first({groups[i] for i in members}, group_members, items, keys, seed)
    targets = dict(zip((1, 2), _target_counts(size, fractions[1:])))
    return [(group_members[atom], split)
            for (atom, _), split in zip(atoms, _fill([n for _, n in atoms], {1: 0, 2: 0}, targets))]


def species_disjoint_fallback_families(families: Sequence[str], species: Sequence[str]) -> list[str]:
    """The families with a single species: species_disjoint splits them by image instead (sorted)."""
    _check_lengths(families=families, species=species)
    names = collections.defaultdict(set)
    for family, name in zip(families, species):
        names[family].add(name)
    return sorted(family for family, found in names.items() if len(found) == 1)


def split_summary(families: Sequence[str], splits: Sequence[str]) -> pd.DataFrame:
    """Images per family (index, sorted) and split (columns SPLITS, zeros included), for the build report."""
    _check_lengths(families=families, splits=splits)
    table = pd.crosstab(pd.Series(list(families), name="family"), pd.Series(list(splits), name="split"))
    return table.reindex(columns=list(SPLITS), fill_value=0)


def _rank(seed: int, key: str) -> str:
    """The seeded, platform-independent order of a key."""
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def _largest_first(units: Iterable[Hashable], members: dict, family_items: list[int], keys: Sequence[str],
                   seed: int) -> list[tuple[Hashable, int]]:
    """(unit, its images in this family), largest first, ties in rank order of the unit's smallest key."""
    inside = set(family_items)
    sized = [(unit, sum(i in inside for i in members[unit])) for unit in units]
    return sorted(sized, key=lambda pair: (-pair[1], _rank(seed, min(keys[i] for i in members[pair[0]]))))


def _target_counts(n: int, fractions: Sequence[float]) -> list[int]:
    """Largest-remainder counts of n split by (normalised) fractions, then at least 1 per split, taken from the
    largest count."""
    exact = [f * n / sum(fractions) for f in fractions]
    counts = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(exact)), key=lambda s: (counts[s] - exact[s], s))
    for s in by_remainder[:n - sum(counts)]:
        counts[s] += 1
    for s in range(len(counts)):
        donor = max(range(len(counts)), key=lambda d: (counts[d], -d))
        if counts[s] == 0 and counts[donor] > 1:
            counts[donor] -= 1
            counts[s] += 1
    return counts


def _fill(sizes: Sequence[int], counts: dict[int, int], targets: dict[int, int]) -> list[int]:
    """Split per unit (units largest first): the split furthest below its target (ties: earlier split), except
    that once no more units are left than splits are empty, the empty ones, so every split gets a unit."""
    counts = dict(counts)
    chosen = []
    for left, size in zip(range(len(sizes), 0, -1), sizes):
        empty = [s for s in counts if counts[s] == 0]
        candidates = empty if left <= len(empty) else list(counts)
        split = max(candidates, key=lambda s: (targets[s] - counts[s], -s))
        counts[split] += size
        chosen.append(split)
    return chosen


def _species_units(families: Sequence[str], species: Sequence[str], groups: Sequence[int],
                   multi_species: set[str]) -> list[int]:
    """Unit per item: duplicate groups, joined with their species in the multi_species families."""
    links = [(f, s) if f in multi_species else None for f, s in zip(families, species)]
    return _components(len(groups), itertools.chain(_same_label_pairs(groups), _same_label_pairs(links)))


def _same_label_pairs(labels: Sequence[Hashable | None]) -> Iterator[tuple[int, int]]:
    """Links each item to the first item with the same label (None links nothing)."""
    first: dict[Hashable, int] = {}
    for i, label in enumerate(labels):
        if label is not None:
            yield first.setdefault(label, i), i


def _components(n: int, pairs: Iterable[tuple[int, int]]) -> list[int]:
    """A root item per item of the graph of pairs (union-find); roots label components, not their order."""
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs:
        parent[find(a)] = find(b)
    return [find(i) for i in range(n)]


def _indices_by(labels: Sequence[Hashable]) -> dict[Hashable, list[int]]:
    indices = collections.defaultdict(list)
    for i, label in enumerate(labels):
        indices[label].append(i)
    return indices


def _check_lengths(**columns: Sequence) -> None:
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"columns differ in length: {lengths}")


def _check_unique(keys: Sequence[str]) -> None:
    repeated = sorted(key for key, n in collections.Counter(keys).items() if n > 1)
    if repeated:
        raise ValueError(f"keys must be unique; repeated: {', '.join(repeated[:5])}")


def check_scheme(scheme: str, fractions: Sequence[float]) -> None:
    """Raises ValueError unless scheme is one of SCHEMES and fractions are 3 positive numbers summing to 1; the
    builder asks before decoding anything, so a mistyped config fails at once."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown split scheme {scheme!r}; expected one of {SCHEMES}")
    if len(fractions) != len(SPLITS) or min(fractions) <= 0 or not math.isclose(sum(fractions), 1):
        raise ValueError(f"fractions must be 3 positive numbers summing to 1, got {tuple(fractions)}")


def _check_split_inputs(keys, families, groups, fractions, species, scheme) -> None:
    columns = {"keys": keys, "families": families, "groups": groups}
    _check_lengths(**columns, **({} if species is None else {"species": species}))
    _check_unique(keys)
    check_scheme(scheme, fractions)
    if scheme == "species_disjoint" and species is None:
        raise ValueError("the species_disjoint scheme needs species")
    sizes = collections.Counter(families)
    small = sorted(family for family, n in sizes.items() if n < len(SPLITS))
    if small:
        raise TooFewImages("every family needs at least 3 images to be in train, validation and test",
                           [f"{family} ({sizes[family]})" for family in small])


def _check_every_split(families: Sequence[str], split_of: Sequence[int], scheme: str) -> None:
    """Raises when duplicates (or species) left a family without images in some split."""
    reached = collections.defaultdict(set)
    for family, split in zip(families, split_of):
        reached[family].add(split)
    short = sorted(family for family, found in reached.items() if len(found) < len(SPLITS))
    if short:
        raise TooFewToSplit(f"the {scheme} split cannot put images of every family in train, validation and "
                            "test (too few separate duplicate groups or species)", short)
