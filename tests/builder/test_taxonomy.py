"""The six ranks: the shipped taxonomy against the real metadata and Imageomics' annotation (tests/data, CC0),
and what the catalog does with a course download that has no taxonomy file or rows outside the tree."""

import colorsys
import pathlib
import shutil

import numpy as np
import pandas as pd
import pytest

from tfds_rarespecies import catalog, labels, replica

DATA = pathlib.Path(__file__).parents[1] / "data"
RANK_COLUMNS = ["eol_page_id", *catalog.LOWER_RANKS, "common_name"]


def _download(tmp_path: pathlib.Path, with_taxonomy: bool) -> catalog.Download:
    root = tmp_path / ("with" if with_taxonomy else "without")
    root.mkdir()
    shutil.copy(DATA / "rare_species_metadata.csv", root / catalog.COURSE_METADATA)
    if with_taxonomy:
        shutil.copy(DATA / "rare_species_taxonomy.csv", root / catalog.TAXONOMY_FILES[0])
    return catalog.read_download(root, "course")


def test_the_shipped_tree_is_strict_and_has_the_published_sizes():
    tree = labels.taxonomy()
    assert {rank: len(labels.names(rank)) for rank in labels.RANKS} == {
        "phylum": 5, "class": 15, "order": 85, "family": 202, "genus": 316, "species": 400}
    assert tree["eol_page_id"].is_unique and len(tree) == 400
    for child, parent in zip(labels.RANKS[1:], labels.RANKS):
        assert tree.groupby(child)[parent].nunique().max() == 1, f"a {child} with two {parent} names"
    assert labels.ancestors("genus").loc["cyclonaias"].to_dict() == {
        "phylum": "mollusca", "class": "bivalvia", "order": "unionida", "family": "unionidae"}


def test_ranks_filled_from_the_shipped_taxonomy_equal_those_read_from_the_file(tmp_path):
    from_file, shipped = _download(tmp_path, True), _download(tmp_path, False)
    assert from_file.taxonomy_source == catalog.TAXONOMY_FILES[0]
    assert shipped.taxonomy_source == catalog.SHIPPED_TAXONOMY
    assert len(shipped.table) == 11_983 and not catalog.unplaced(shipped.table).any()
    pd.testing.assert_frame_equal(shipped.table[RANK_COLUMNS], from_file.table[RANK_COLUMNS])


def test_a_row_outside_the_tree_is_unplaced_and_the_others_keep_their_ranks(tmp_path):
    root = tmp_path / "download"
    root.mkdir()
    metadata = pd.read_csv(DATA / "rare_species_metadata.csv", dtype=str).head(3)
    metadata.to_csv(root / catalog.COURSE_METADATA, index=False)
    taxonomy = pd.read_csv(DATA / "rare_species_taxonomy.csv", dtype=str).head(3)
    taxonomy.loc[0, "genus"] = "Nonexistens"  # a name the shipped tree does not have
    taxonomy.loc[1, ["cls", "order", "genus", "species", "class"]] = ""  # left to the shipped annotation
    taxonomy.to_csv(root / catalog.TAXONOMY_FILES[0], index=False)
    table = catalog.read_download(root, "course").table
    assert catalog.unplaced(table).tolist() == [True, False, False]
    assert table.loc[table.index[0], list(catalog.LOWER_RANKS)].tolist() == ["", "", "", ""]
    page = labels.taxonomy().set_index("eol_page_id").loc[table["eol_page_id"].iloc[1]]
    assert table.loc[table.index[1], list(catalog.LOWER_RANKS)].tolist() == page[list(catalog.LOWER_RANKS)].tolist()


@pytest.mark.parametrize("rank", ["kingdom", "tribe"])
def test_an_unknown_rank_is_refused(rank):
    with pytest.raises(ValueError, match=f"unknown rank '{rank}'"):
        labels.names(rank)


def _mean_colour(page: int, draws: int = 6) -> np.ndarray:
    rng = np.random.default_rng(page)
    return np.mean([np.asarray(replica.taxonomy_pattern(page, 96, 96, rng), np.float32).mean(axis=(0, 1))
                    for _ in range(draws)], axis=0)


def test_taxonomy_pixels_make_sister_families_look_alike():
    """The taxonomy replica's palette is the class's: two families of one order are nearer in colour than two
    species of different classes, so mistakes between sister families are the likely ones."""
    tree = labels.taxonomy()
    order = tree.groupby("order")["family"].nunique().idxmax()
    first, second = (tree[tree["family"] == family]["eol_page_id"].iloc[0]
                     for family in sorted(tree.loc[tree["order"] == order, "family"].unique())[:2])
    other_class = tree[tree["class"] != tree.loc[tree["eol_page_id"] == first, "class"].iloc[0]]["eol_page_id"]
    sisters = np.linalg.norm(_mean_colour(first) - _mean_colour(second))
    strangers = np.median([np.linalg.norm(_mean_colour(first) - _mean_colour(page)) for page in other_class[:8]])
    assert sisters < strangers / 2, (sisters, strangers)


def _hue(colour: np.ndarray) -> float:
    return colorsys.rgb_to_hsv(*(colour / 255))[0]


def _hue_gap(first: float, second: float) -> float:
    return min(abs(first - second), 1 - abs(first - second))


def test_taxonomy_pixels_keep_classes_apart_and_a_phylum_together():
    """No two classes share a colour (hashed palettes once gave insects and birds the same green), and the
    classes of one phylum are nearer in hue than the classes of two phyla, as in real photos."""
    tree = labels.taxonomy()
    classes = tree.drop_duplicates("class").set_index("class")
    hues = {name: _hue(_mean_colour(int(row["eol_page_id"]))) for name, row in classes.iterrows()}
    gaps = {(a, b): _hue_gap(hues[a], hues[b]) for a in hues for b in hues if a < b}
    same_phylum = [gap for (a, b), gap in gaps.items() if classes.loc[a, "phylum"] == classes.loc[b, "phylum"]]
    other_phyla = [gap for (a, b), gap in gaps.items() if classes.loc[a, "phylum"] != classes.loc[b, "phylum"]]
    assert min(gaps.values()) > 0.02, min(gaps.items(), key=lambda item: item[1])
    assert np.median(same_phylum) < np.median(other_phyla) / 2, (np.median(same_phylum), np.median(other_phyla))


def test_an_unknown_pixel_kind_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown pixels 'stripes'"):
        replica.write_replica(tmp_path, pd.DataFrame(), pixels="stripes")
