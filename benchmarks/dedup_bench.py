"""Near-duplicate search: the multi-index (tfds_rarespecies.near_duplicates.pairs) vs the pairwise scan.

    .venv/bin/python -m benchmarks.dedup_bench

Synthetic 64-bit hashes, uniformly random (an unrelated photo pair's pHash is ~32 bits apart), a hundredth of
them replaced by copies of others with 0 to --max_distance + 2 bits flipped, so every search has pairs to find
and misses to reject. Layouts: all hashes in one family (the scan's worst case: its work is the sum of the
squared family sizes) at --sizes, and the largest size over --families families of Zipf-distributed sizes (an
EOL export with thousands of families, a few of them huge). The pairwise scan (near_duplicates.pairwise,
blocks of rows against the rest, numpy-vectorised) runs when it is expected to finish within
--pairwise_budget seconds; otherwise its time is extrapolated from the largest run measured, by the sum of
squared family sizes (marked "est."). When both ran, their pairs must be the same. The index is timed as the
best of --repeats runs. Prints one table: seconds of each, the speed-up, the pairs found and the index's plan.
Target: >= 50x at 100k.
"""

import dataclasses
import os
import time

import numpy as np
from absl import app, flags

from benchmarks import table
from tfds_rarespecies import near_duplicates, splits

_SIZES = flags.DEFINE_list("sizes", ["10000", "100000", "1000000"], "Hash counts of the one-family rows.")
_FAMILIES = flags.DEFINE_integer("families", 2000, "Families of the Zipf row (at the largest size); 0 = none.")
_MAX_DISTANCE = flags.DEFINE_integer("max_distance", splits.NEAR_DUPLICATE_MAX_DISTANCE, "Hamming threshold.")
_BUDGET = flags.DEFINE_float("pairwise_budget", 300, "Longest expected pairwise scan run (s); longer ones are "
                             "extrapolated.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Index runs per row; the table shows the fastest.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the synthetic hashes.")


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    labels: np.ndarray
    hashes: np.ndarray

    @property
    def work(self) -> int:
        """The pairwise scan's comparisons, up to a constant: the sum of squared family sizes."""
        return int((np.bincount(self.labels).astype(np.float64) ** 2).sum())


def synthetic(n: int, families: int, max_distance: int, seed: int) -> Case:
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2**64, n, dtype=np.uint64)
    weights = 1 / np.arange(1, families + 1)
    labels = np.sort(rng.choice(families, n, p=weights / weights.sum())) if families > 1 else np.zeros(n, int)
    copies = rng.choice(n, n // 100, replace=False)
    sources = rng.integers(0, n, len(copies))
    flips = np.zeros(len(copies), dtype=np.uint64)
    for k, count in enumerate(rng.integers(0, max_distance + 3, len(copies))):
        for bit in rng.choice(64, count, replace=False):
            flips[k] |= np.uint64(1) << np.uint64(bit)
    hashes[copies], labels[copies] = hashes[sources] ^ flips, labels[sources]
    name = f"{n:,} in one family" if families <= 1 else f"{n:,} in {families:,} families (Zipf)"
    return Case(name, labels, hashes)


def timed(function, *args) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - start, result


def main(argv):
    del argv
    d, sizes = _MAX_DISTANCE.value, sorted(int(size) for size in _SIZES.value)
    cases = [synthetic(n, 1, d, _SEED.value) for n in sizes]
    if _FAMILIES.value > 1:
        cases.append(synthetic(sizes[-1], _FAMILIES.value, d, _SEED.value))
    rows = [("hashes", "largest family", "pairwise s", "index s", "x pairwise", "pairs", "index plan")]
    rate = None  # pairwise seconds per unit of work, from the largest run measured
    for case in sorted(cases, key=lambda c: c.work):
        print(f"{case.name} ...", flush=True)
        index_s = float("inf")
        for _ in range(_REPEATS.value):
            seconds, found = timed(near_duplicates.pairs, case.labels, case.hashes, d)
            index_s = min(index_s, seconds)
        if rate is None or rate * case.work <= _BUDGET.value:
            pairwise_s, reference = timed(near_duplicates.pairwise, case.labels, case.hashes, d)
            assert np.array_equal(found, reference), f"{case.name}: the index and the scan disagree"
            rate, pairwise_cell = pairwise_s / case.work, f"{pairwise_s:.2f}"
        else:
            pairwise_s = rate * case.work
            pairwise_cell = f"~{pairwise_s:.0f} (est.)"
        sizes = np.bincount(case.labels)
        plan = near_duplicates.plan_for(sizes.tolist(), d)
        rows.append((case.name, f"{sizes.max():,}", pairwise_cell, f"{index_s:.3f}", f"{pairwise_s / index_s:.0f}",
                     f"{len(found):,}", f"{len(plan.widths)} chunks of {min(plan.widths)}-{max(plan.widths)} bits, "
                                        f"radius {plan.radius}"))
    print(f"\nmax_distance {d}; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end")
    print(table.markdown(rows))


if __name__ == "__main__":
    app.run(main)
