"""Near-duplicate pairs among 64-bit perceptual hashes, within label groups (families), in near-linear time.

Comparing every pair of a family's hashes is quadratic: instant at 60 images a family, hours for the families
of a million-image EOL export. Multi-index hashing (Norouzi, Punjani & Fleet, CVPR 2012) finds exactly the same
pairs: cut the 64 bits into m chunks; two hashes at most d bits apart differ in at most r = d // m bits of some
chunk (were every chunk r + 1 or more bits apart, the hashes would be m * (r + 1) > d apart). So each hash
looks up, chunk by chunk, the hashes of its family whose chunk equals its own with at most r bits flipped, and
every candidate is checked by its exact Hamming distance. Small families get m = d + 1 (exact chunk matches,
r = 0); larger ones fewer, wider chunks with one-bit probes, so that both the probes and the candidates stay a
few per hash (`plan_for`).
"""

import dataclasses
import itertools
import math
from collections.abc import Hashable, Iterator, Sequence

import numpy as np
import pandas as pd

HASH_BITS = 64
# A lookup (a searchsorted probe, or a step of the equal-key scan) costs about this many candidate checks: fitted
# to benchmarks/dedup_bench.py at 100k and 1M hashes in one family (both plans timed).
_PROBE_COST = 3
# Rows compared at once by the pairwise scan: bounds its memory (~100 MB) whatever the group sizes.
_BLOCK = 1 << 22
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@dataclasses.dataclass(frozen=True)
class Plan:
    """Chunk widths (bits, summing to 64) and the bits flipped per chunk lookup."""

    widths: tuple[int, ...]
    radius: int

    @classmethod
    def split(cls, chunks: int, max_distance: int) -> "Plan":
        """`chunks` near-equal chunks (wider ones first) with the radius that keeps the search exact."""
        if not 1 <= chunks <= min(max_distance + 1, HASH_BITS):
            raise ValueError(f"chunks must be from 1 to {min(max_distance + 1, HASH_BITS)}, got {chunks}")
        base, wider = divmod(HASH_BITS, chunks)
        return cls(tuple(base + (i < wider) for i in range(chunks)), max_distance // chunks)

    def probes(self) -> int:
        """Lookups per hash and chunk: the chunk itself and each flip of up to `radius` of its bits."""
        return sum(math.comb(max(self.widths), k) for k in range(self.radius + 1))


def plan_for(group_sizes: Sequence[int], max_distance: int) -> Plan:
    """The plan with the least expected work on uniformly spread hashes: probes n * m * P and candidates
    m * P * sum(s^2) / 2^w (P probes per chunk of w bits, s the group sizes)."""
    n, square = sum(group_sizes), sum(s * s for s in group_sizes)

    def cost(plan: Plan) -> float:
        lookups = len(plan.widths) * plan.probes()
        return lookups * (n * _PROBE_COST + square / 2 ** min(plan.widths))

    return min((Plan.split(m, max_distance) for m in range(1, min(max_distance + 1, HASH_BITS) + 1)), key=cost)


def pairs(labels: Sequence[Hashable], hashes: np.ndarray, max_distance: int, plan: Plan | None = None
          ) -> np.ndarray:
    """Index pairs (i < j, shape (k, 2), sorted) of items with equal labels whose hashes (uint64) differ in at
    most max_distance bits: exactly those of `pairwise`. `plan` defaults to plan_for the label group sizes."""
    codes, hashes = _check(labels, hashes, max_distance)
    if not len(codes):
        return np.empty((0, 2), np.int64)
    plan = plan or plan_for(np.bincount(codes).tolist(), max_distance)
    salt = (codes.astype(np.uint64) + np.uint64(1)) * _GOLDEN  # equal labels, equal salt; others collide rarely
    found, shift = [], 0
    for width in plan.widths:
        keys = ((hashes >> np.uint64(shift)) & np.uint64((1 << width) - 1)) ^ salt
        order = np.argsort(keys)
        ordered = keys[order]
        starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        runs = _Runs(ordered[starts], starts, np.diff(np.r_[starts, len(keys)]), order)
        flipped = (runs.pairs_at(flips) for flips in _flips(width, plan.radius))
        for i, j in itertools.chain(_equal_key_pairs(ordered, order), flipped):
            keep = (codes[i] == codes[j]) & (_popcount(hashes[i] ^ hashes[j]) <= max_distance)
            found.append(np.stack([np.minimum(i, j)[keep], np.maximum(i, j)[keep]], axis=1))
        shift += width
    return _sorted_unique(np.concatenate(found) if found else np.empty((0, 2), np.int64), len(codes))


def pairwise(labels: Sequence[Hashable], hashes: np.ndarray, max_distance: int) -> np.ndarray:
    """The definition `pairs` meets, by comparing every pair within each label group (blocks of rows against
    the rest, vectorised): quadratic, kept as the reference for tests and benchmarks/dedup_bench.py."""
    codes, hashes = _check(labels, hashes, max_distance)
    found = []
    for members in pd.Series(np.arange(len(codes))).groupby(codes).indices.values():
        values, rows = hashes[members], max(1, _BLOCK // max(1, len(members)))
        for start in range(0, len(members), rows):
            block = values[start:start + rows, None] ^ values[None, start:]
            a, b = np.nonzero(_popcount(block) <= max_distance)
            later = b > a
            found.append(np.stack([members[start + a[later]], members[start + b[later]]], axis=1))
    return _sorted_unique(np.concatenate(found) if found else np.empty((0, 2), np.int64), len(codes))


def hashes_from_hex(phash: Sequence[str]) -> np.ndarray:
    """uint64 values of 16-hex-digit hashes (imagehash's str())."""
    return np.array([int(value, 16) for value in phash], dtype=np.uint64)


def _check(labels: Sequence[Hashable], hashes: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray]:
    hashes = np.asarray(hashes)
    if hashes.dtype != np.uint64 or hashes.ndim != 1 or len(hashes) != len(labels):
        raise ValueError(f"hashes must be a 1-D uint64 array with one value per label ({len(labels)}), got "
                         f"{hashes.dtype} of shape {hashes.shape}")
    if not 0 <= max_distance <= HASH_BITS:
        raise ValueError(f"max_distance must be from 0 to {HASH_BITS}, got {max_distance}")
    return pd.factorize(pd.Series(list(labels), dtype=object), use_na_sentinel=False)[0].astype(np.int64), hashes


def _flips(width: int, radius: int) -> Iterator[int]:
    """Every mask of 1 to `radius` of a chunk's `width` low bits."""
    for k in range(1, min(radius, width) + 1):
        for bits in itertools.combinations(range(width), k):
            yield sum(1 << b for b in bits)


def _equal_key_pairs(ordered: np.ndarray, order: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(i, j) index arrays of every pair of items with equal keys: offset by offset along the sorted keys,
    keeping only the positions whose run reaches that far, so the work is n plus the pairs."""
    positions, offset = np.arange(len(ordered) - 1), 1
    while positions.size:
        positions = positions[positions + offset < len(ordered)]
        positions = positions[ordered[positions] == ordered[positions + offset]]
        yield order[positions], order[positions + offset]
        offset += 1


@dataclasses.dataclass(frozen=True)
class _Runs:
    """The runs of equal keys of one chunk: key, first position in key order, length; `order` maps positions
    to items."""

    keys: np.ndarray
    starts: np.ndarray
    sizes: np.ndarray
    order: np.ndarray

    def pairs_at(self, flips: int) -> tuple[np.ndarray, np.ndarray]:
        """(i, j) index arrays of every item of a run against every item of the run whose key is its key with
        `flips` flipped (each pair of runs once: from the smaller key)."""
        probes = self.keys ^ np.uint64(flips)
        found = np.minimum(np.searchsorted(self.keys, probes), len(self.keys) - 1)
        runs = np.flatnonzero((self.keys[found] == probes) & (probes > self.keys))
        other = found[runs]
        rows, columns = self.sizes[runs], self.sizes[other]
        cells = rows * columns
        which = np.repeat(np.arange(len(runs)), cells)
        cell = np.arange(cells.sum()) - np.repeat(np.cumsum(cells) - cells, cells)
        return (self.order[self.starts[runs][which] + cell // columns[which]],
                self.order[self.starts[other][which] + cell % columns[which]])


def _swar_popcount(values: np.ndarray) -> np.ndarray:
    """Set bits per uint64, for numpy before 2.0 (which added bitwise_count)."""
    values = values - ((values >> np.uint64(1)) & np.uint64(0x5555555555555555))
    values = (values & np.uint64(0x3333333333333333)) + ((values >> np.uint64(2)) & np.uint64(0x3333333333333333))
    values = (values + (values >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return (values * np.uint64(0x0101010101010101)) >> np.uint64(56)


_popcount = getattr(np, "bitwise_count", _swar_popcount)


def _sorted_unique(found: np.ndarray, n: int) -> np.ndarray:
    """Pairs once each, in (i, j) order."""
    codes = np.unique(found[:, 0].astype(np.int64) * n + found[:, 1])
    return np.stack([codes // n, codes % n], axis=1) if len(codes) else np.empty((0, 2), np.int64)
