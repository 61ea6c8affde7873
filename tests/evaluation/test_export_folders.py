"""The export replaces only a folder it wrote itself (marked), never a user's folder, even with --overwrite."""

import json
import pathlib

import pytest

from trainer.serving import export
from trainer.training import run_dir


def _settings(trained_run, export_dir: pathlib.Path, overwrite: bool) -> export.ExportSettings:
    return export.ExportSettings(model_dir=trained_run, export_dir=str(export_dir), overwrite=overwrite)


def test_overwrite_of_a_folder_the_export_did_not_write_is_refused_and_it_stays_untouched(trained_run, tmp_path):
    mine = tmp_path / "my_folder"
    (mine / "sub").mkdir(parents=True)
    (mine / "thesis.tex").write_text("years of work")
    (mine / "sub" / "data.csv").write_text("1,2,3")
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    for target in (mine, a_file):
        with pytest.raises(run_dir.NotOursError, match="never replaced, even with --overwrite") as refused:
            export.export(_settings(trained_run, target, overwrite=True))
        assert "\n" not in str(refused.value)
    assert (mine / "thesis.tex").read_text() == "years of work" and (mine / "sub" / "data.csv").is_file()
    assert sorted(path.name for path in mine.rglob("*")) == ["data.csv", "sub", "thesis.tex"]
    assert a_file.read_text() == "not a folder"


def test_an_export_it_wrote_is_replaced_with_overwrite_only(trained_run, tmp_path):
    target = tmp_path / "served"
    export.export(_settings(trained_run, target, overwrite=False))
    assert (target / run_dir.OWNER_MARKER).read_text().startswith("written by")
    with pytest.raises(export.ExportError, match="pass --overwrite"):
        export.export(_settings(trained_run, target, overwrite=False))
    (target / "stale.txt").write_text("from the first export")
    export.export(_settings(trained_run, target, overwrite=True))
    assert not (target / "stale.txt").exists() and (target / "saved_model.pb").is_file()


def test_the_savedmodel_export_measures_its_agreement_with_predict(trained_run, tmp_path, capsys):
    """One decoder: on the run's validation JPEGs the SavedModel answers as predict does, and says so."""
    path = export.export(_settings(trained_run, tmp_path / "served", overwrite=False))
    agreement = json.loads((path / export.METADATA_NAME).read_text())["agreement_with_predict"]
    assert agreement["measured"] and agreement["images"] > 0
    assert agreement["top1_agreement"] == 1.0 and agreement["max_probability_difference"] <= 1e-6
    assert "agreement with predict: top-1 1.0000" in capsys.readouterr().out
