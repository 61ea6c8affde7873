"""The near-duplicate index finds exactly the pairs the pairwise scan finds, on random hashes and on the ones
that break a wrong index: hashes exactly d and d + 1 bits apart (spread over the chunks so that only one chunk
agrees, or packed into one chunk), whole families within d of each other, identical hashes, labels that split
or merge otherwise equal hashes; under every chunking that is exact for d, not only the planned one."""

import numpy as np
import pytest

from tfds_rarespecies import near_duplicates as nd

D = 4  # the builder's default, splits.NEAR_DUPLICATE_MAX_DISTANCE


def _random(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2**64, n, dtype=np.uint64)


def _flip(value: int, bits) -> int:
    return value ^ sum(1 << b for b in bits)


def _plans(max_distance: int) -> list[nd.Plan]:
    """Every exact chunking whose lookups stay few (radius 2 or less), so each lookup path is exercised."""
    plans = [nd.Plan.split(m, max_distance) for m in range(1, min(max_distance + 1, nd.HASH_BITS) + 1)]
    return [plan for plan in plans if plan.radius <= 2]


def _check_all_plans(labels, hashes, max_distance, expected=None) -> np.ndarray:
    hashes = np.asarray(hashes, dtype=np.uint64)
    reference = nd.pairwise(labels, hashes, max_distance)
    if expected is not None:
        assert sorted(map(tuple, reference.tolist())) == sorted(expected)
    assert np.array_equal(nd.pairs(labels, hashes, max_distance), reference)
    for plan in _plans(max_distance):
        assert np.array_equal(nd.pairs(labels, hashes, max_distance, plan=plan), reference), plan
    return reference


def _planted(n: int, families: int, max_distance: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random hashes, a fifth of them replaced by copies of others with 0 to max_distance + 2 bits flipped."""
    rng = np.random.default_rng(seed)
    hashes, labels = _random(n, seed), rng.integers(0, families, n)
    for target in rng.choice(n, n // 5, replace=False):
        source = int(rng.integers(n))
        bits = rng.choice(64, int(rng.integers(0, max_distance + 3)), replace=False)
        hashes[target], labels[target] = _flip(int(hashes[source]), bits.tolist()), labels[source]
    return labels, hashes


@pytest.mark.parametrize("max_distance", [0, 1, 2, D, 7, 12])
@pytest.mark.parametrize("families", [1, 3, 40])
def test_planted_copies_give_the_pairwise_pairs(max_distance, families):
    labels, hashes = _planted(3000, families, max_distance, seed=max_distance * 100 + families)
    found = _check_all_plans(labels, hashes, max_distance)
    assert len(found) > 100  # the planted copies within max_distance, not an empty agreement


def test_plain_random_hashes_have_no_pairs_at_the_default():
    assert len(_check_all_plans(np.zeros(5000, int), _random(5000, 7), D)) == 0


@pytest.mark.parametrize("layout", ["one_bit_per_chunk", "one_chunk", "edges"])
def test_exactly_d_is_in_and_d_plus_1_is_out(layout):
    """d bits spread one per chunk (of d + 1) leave a single chunk equal: the pigeonhole's tight case."""
    base = int(_random(1, 3)[0])
    chunk_starts = [0, 13, 26, 39, 52]  # Plan.split(5, 4): widths 13, 13, 13, 13, 12
    bits = {"one_bit_per_chunk": chunk_starts, "one_chunk": [0, 1, 2, 3, 4],
            "edges": [12, 13, 51, 52, 63]}[layout]
    hashes = [base, _flip(base, bits[:D]), _flip(base, bits[:D + 1]), _flip(base, bits[1:D + 1])]
    # distances: 0-1 d, 0-2 d+1 (out), 0-3 d, 1-2 1, 1-3 2, 2-3 1
    expected = [(0, 1), (0, 3), (1, 2), (1, 3), (2, 3)]
    _check_all_plans(["f"] * 4, hashes, D, expected)


def test_a_whole_family_within_d_of_each_other_is_every_pair():
    base = int(_random(1, 4)[0])
    subsets = [[b for k, b in enumerate((3, 17, 30, 45)) if mask >> k & 1] for mask in range(16)]
    hashes = [_flip(base, bits) for bits in subsets]  # any two differ only within 4 bits
    found = _check_all_plans(["f"] * 16, hashes, D)
    assert len(found) == 16 * 15 // 2


def test_identical_hashes_pair_with_each_other_only_within_their_family():
    hashes = [5] * 30 + [2**64 - 1] * 20 + [5] * 10
    labels = ["a"] * 30 + ["a"] * 20 + ["b"] * 10
    found = _check_all_plans(labels, hashes, D)
    assert len(found) == 30 * 29 // 2 + 20 * 19 // 2 + 10 * 9 // 2


def test_one_family_vs_one_family_per_item():
    labels, hashes = _planted(2000, 1, D, seed=11)
    together = _check_all_plans(labels, hashes, D)
    apart = _check_all_plans([f"f{i}" for i in range(2000)], hashes, D)
    assert len(together) > 100 and len(apart) == 0


def test_labels_of_any_hashable_type_and_empty_inputs():
    hashes = np.array([1, 1, 1], dtype=np.uint64)
    assert nd.pairs([("a", 1), ("a", 1), None], hashes, 0).tolist() == [[0, 1]]
    assert nd.pairs([], np.array([], dtype=np.uint64), D).shape == (0, 2)


@pytest.mark.parametrize("hashes, max_distance, message", [
    (np.array([1, 2], dtype=np.int64), D, "uint64"),
    (np.array([1], dtype=np.uint64), D, "one value per label"),
    (np.array([1, 2], dtype=np.uint64), 65, "max_distance must be from 0 to 64"),
])
def test_bad_arguments_are_refused(hashes, max_distance, message):
    with pytest.raises(ValueError, match=message):
        nd.pairs(["a", "b"], hashes, max_distance)


def test_plan_is_exact_chunks_for_small_families_and_wider_probed_chunks_for_huge_ones():
    assert nd.plan_for([60] * 200, D) == nd.Plan((13, 13, 13, 13, 12), 0)
    assert nd.plan_for([1_000_000], D) == nd.Plan((22, 21, 21), 1)
    with pytest.raises(ValueError, match="chunks must be from 1 to 5"):
        nd.Plan.split(6, D)


def test_swar_popcount_matches_numpy():
    values = np.concatenate([_random(1000, 5), np.array([0, 2**64 - 1, 1 << 63], dtype=np.uint64)])
    expected = [bin(int(v)).count("1") for v in values]
    assert nd._swar_popcount(values).tolist() == expected == nd._popcount(values).tolist()


def test_hex_hashes_convert_to_their_values():
    assert nd.hashes_from_hex(["0000000000000001", "ffffffffffffffff"]).tolist() == [1, 2**64 - 1]
