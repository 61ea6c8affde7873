"""labels="from_metadata": the label lists and tree read off the download, for collections beyond the 202
families (catalog and builder; training on such a build is in tests/training/test_from_metadata.py)."""

import json
import pathlib
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import tensorflow_datasets as tfds

import pipelines
import tfds_rarespecies
from tests.conftest import build, tiny_rows
from tfds_rarespecies import catalog, errors, labels, replica

DATA = pathlib.Path(__file__).parents[1] / "data"


def foreign(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows of another collection: every family renamed to one no shipped list has, and one phylum too."""
    rows = rows.copy()
    rows["family"] = "lab" + rows["family"]
    rows.loc[rows["phylum"] == "cnidaria", "phylum"] = "placozoa"
    return rows


def foreign_download(root: pathlib.Path, real_metadata, real_taxonomy, with_taxonomy=True,
                     per_family=8) -> pathlib.Path:
    """A course-layout export of the four tiny families renamed (foreign), generated images."""
    rows = foreign(tiny_rows(real_metadata, per_family=per_family))
    return replica.write_replica(root, rows, "course", real_taxonomy if with_taxonomy else None,
                                 min_side=130, max_side=200)


def test_the_real_download_read_from_its_own_metadata_gives_the_shipped_tree(tmp_path):
    root = tmp_path / "download"
    root.mkdir()
    shutil.copy(DATA / "rare_species_metadata.csv", root / catalog.COURSE_METADATA)
    shutil.copy(DATA / "rare_species_taxonomy.csv", root / catalog.TAXONOMY_FILES[0])
    own = catalog.read_download(root, "course", label_source="from_metadata")
    assert not catalog.unplaced(own.table).any()
    pd.testing.assert_frame_equal(own.taxonomy.paths, labels.shipped().paths)
    assert {rank: own.taxonomy.names(rank) for rank in labels.RANKS} == {
        rank: labels.names(rank) for rank in labels.RANKS}


def test_rows_that_contradict_the_tree_are_unplaced_and_a_family_under_two_phyla_fails(tmp_path, real_metadata,
                                                                                        real_taxonomy):
    root = foreign_download(tmp_path / "download", real_metadata, real_taxonomy)
    taxonomy = pd.read_csv(root / catalog.TAXONOMY_FILES[0], dtype=str, keep_default_na=False)
    taxonomy.loc[1, ["cls", "order", "genus", "species", "class"]] = ""  # no lower ranks at all
    taxonomy.loc[2, "order"] = "Elsewhereiformes"  # its family is under another order in the first row
    taxonomy.to_csv(root / catalog.TAXONOMY_FILES[0], index=False)
    download = catalog.read_download(root, "course", label_source="from_metadata")
    assert catalog.unplaced(download.table).tolist()[:3] == [False, True, True]
    assert not catalog.unplaced(download.table).iloc[3:].any()
    assert "elsewhereiformes" not in download.taxonomy.names("order")
    assert set(download.taxonomy.names("family")) == set(download.table["family"])

    metadata = pd.read_csv(root / catalog.COURSE_METADATA, dtype=str)
    metadata.loc[5, "phylum"] = "Mollusca" if metadata.loc[5, "phylum"] != "Mollusca" else "Chordata"
    metadata.to_csv(root / catalog.COURSE_METADATA, index=False)
    with pytest.raises(catalog.MetadataError, match=r"row 7: column phylum: family '\w+' is under '\w+' at row 2"):
        catalog.read_download(root, "course", label_source="from_metadata")


def test_a_download_without_lower_ranks_gets_a_phylum_family_tree(tmp_path, real_metadata):
    root = foreign_download(tmp_path / "download", real_metadata, None, with_taxonomy=False)
    download = catalog.read_download(root, "course", label_source="from_metadata")
    assert download.taxonomy_source == catalog.NO_TAXONOMY and catalog.unplaced(download.table).all()
    assert download.taxonomy.names("genus") == ()
    assert list(download.taxonomy.ancestors("family").columns) == ["phylum"]
    assert download.taxonomy.phylum_of("family")["labapidae"] == "arthropoda"


def test_the_build_stores_the_download_labels_and_tree_and_pipelines_read_them(tmp_path, real_metadata,
                                                                               real_taxonomy):
    root = foreign_download(tmp_path / "download", real_metadata, real_taxonomy)
    hint = "'placozoa' is not one of the 5 known phylum names .* labels=\"from_metadata\""
    with pytest.raises(errors.BuildError, match=hint):
        build(root, tmp_path / "shipped")
    build(root, tmp_path / "data", labels="from_metadata")
    cfg = pipelines.InputConfig(data_dir=str(tmp_path / "data"), dataset_config="small_128_custom",
                                 backbone="baseline_cnn", image_size=32, batch_size=4)
    info = pipelines.dataset_info(cfg)
    assert info.names["family"] == ("labacroporidae", "labapidae", "labcheloniidae", "labunionidae")
    assert info.names["phylum"] == ("arthropoda", "chordata", "mollusca", "placozoa")
    assert info.names["species"] == info.taxonomy.names("species") and len(info.names["species"]) > 4
    assert info.taxonomy.phylum_of("family")["labacroporidae"] == "placozoa"
    assert pipelines.label_counts(cfg, "train").tolist() == [6, 6, 6, 6]


def test_a_label_source_the_builder_does_not_know_is_one_line(tmp_path, real_metadata, real_taxonomy):
    root = foreign_download(tmp_path / "download", real_metadata, real_taxonomy, per_family=3)
    with pytest.raises(errors.BuildError, match="field labels is 'metadata'; it must be one of shipped, "
                                                "from_metadata"):
        build(root, tmp_path / "data", labels="metadata")
    assert tfds_rarespecies.RareSpeciesConfig(name="x").labels == "shipped"


@pytest.mark.slow
def test_the_tfds_cli_builds_an_export_with_its_own_labels(tmp_path, real_metadata, real_taxonomy):
    """The README's command, through the real `tfds build`, then read back by name with tfds.load."""
    root = foreign_download(tmp_path / "download", real_metadata, real_taxonomy, per_family=4)
    config = json.dumps({"name": "my_export_128", "short_side": 128, "labels": "from_metadata"})
    result = subprocess.run([str(pathlib.Path(sys.executable).parent / "tfds"), "build", "rare_species",
                             "--imports=tfds_rarespecies", f"--manual_dir={root}", f"--data_dir={tmp_path / 'data'}",
                             f"--download_dir={tmp_path / 'downloads'}", f"--config={config}"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "labels from the metadata: phylum 4, class 4, order 4, family 4" in result.stdout
    loaded = tfds.builder("rare_species/my_export_128", data_dir=str(tmp_path / "data"))  # a config built elsewhere
    assert loaded.info.features["family"].names == ["labacroporidae", "labapidae", "labcheloniidae", "labunionidae"]
