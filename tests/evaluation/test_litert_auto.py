"""The LiteRT variants beyond float32 and int8 (float16, dynamic, mixed), --quantize=auto's choice and its record,
and labels.txt beside every .tflite."""

import dataclasses
import json
import pathlib
import shutil

import numpy as np
import pytest

from tests.evaluation.common import pattern
from trainer.serving import export, litert, litert_export, predictors, trained_model


def _export(model_dir: str, export_dir: pathlib.Path, quantize: str, **changes) -> pathlib.Path:
    return export.export(export.ExportSettings(model_dir, format="litert", quantize=quantize,
                                               export_dir=str(export_dir), **changes))


def _pixels(count: int = 4) -> np.ndarray:
    return np.stack([pattern(32, 32, seed) for seed in range(count)])


@pytest.fixture
def agreement_of(monkeypatch):
    """Sets the measured top-1 agreement of chosen variants (the rest keep theirs), so which variant reaches
    the floor does not hang on how 8 validation images round on this CPU."""
    measured, forced = litert_export.Judge.measure, {}

    def measure(self, quantize, content, *mixed):
        candidate = measured(self, quantize, content, *mixed)
        if quantize not in forced:
            return candidate
        return dataclasses.replace(candidate, parity={**candidate.parity, "top1_agreement": forced[quantize]})

    monkeypatch.setattr(litert_export.Judge, "measure", measure)
    return forced


@pytest.mark.parametrize("quantize", ["float16", "dynamic", "mixed"])
def test_each_variant_exports_loads_and_answers_like_keras(litert_run, tmp_path, quantize):
    path = _export(litert_run, tmp_path, quantize, min_agreement=0.0)
    assert path == tmp_path / f"{quantize}.tflite"
    model = litert.load(litert.LiteRTFiles(tmp_path, quantize))
    metadata = model.metadata
    assert metadata["quantization"] == quantize and metadata["speed"]["images_per_second"] > 0
    assert (metadata["calibration"] is not None) == (quantize == "mixed")
    assert (metadata["float_layers"] is not None) == (quantize == "mixed")
    float32 = json.loads(litert.LiteRTFiles(litert.default_dir(litert_run), "float32").metadata.read_text())
    assert metadata["bytes"] < float32["bytes"]
    answers, keras_answers = model.probabilities(_pixels()), trained_model.load_trained(litert_run).probabilities(
        _pixels())
    for head, rows in keras_answers.items():
        assert answers[head].shape == rows.shape and np.all(answers[head] >= 0) and np.all(answers[head] <= 1)
        if quantize == "float16":
            np.testing.assert_allclose(answers[head], rows, atol=1e-2)
    # the int8 parts round near-ties either way (as int8's own test allows): judged on validation
    assert metadata["parity"]["top1_agreement"] >= 0.75


def test_mixed_keeps_the_worst_layers_float_until_the_floor_holds(litert_run, tmp_path, monkeypatch):
    """Each step keeps more layers float from the input end; the first step at the floor is written."""
    steps = []
    measured = litert_export.Judge.measure

    def counting(self, quantize, content, float_layers, errors):
        steps.append(float_layers)
        candidate = measured(self, quantize, content, float_layers, errors)
        return dataclasses.replace(candidate, parity={**candidate.parity,
                                                      "top1_agreement": 1.0 if len(float_layers) >= 2 else 0.5})

    monkeypatch.setattr(litert_export.Judge, "measure", counting)
    _export(litert_run, tmp_path, "mixed")
    metadata = litert.load(litert.LiteRTFiles(tmp_path, "mixed")).metadata
    assert [len(layers) for layers in steps] == [1, 2] and metadata["float_layers"] == list(steps[-1])
    assert steps[1][0] == steps[0][0] == next(iter(metadata["layer_errors"]))  # from the input end
    assert set(metadata["float_layers"]) < set(metadata["layer_errors"])


def test_auto_keeps_the_fastest_variant_at_the_floor_and_records_it(litert_run, tmp_path, agreement_of, capsys):
    agreement_of.update(int8=0.5, mixed=0.6, dynamic=1.0)
    path = _export(litert_run, tmp_path, litert.AUTO)
    assert path == tmp_path / "dynamic.tflite"
    assert sorted(item.name for item in tmp_path.iterdir()) == ["auto.json", "dynamic.json", "dynamic.tflite",
                                                                "labels.txt"]
    record = json.loads((tmp_path / litert.CHOICE_NAME).read_text())
    assert record["chosen"] == "dynamic" and record["sha256"] == litert.sha256(path.read_bytes())
    tried = [(entry["quantization"], entry["kept"]) for entry in record["tried"]]
    assert tried[0] == ("int8", False) and tried[-1] == ("dynamic", True)
    assert {name for name, _ in tried} == {"int8", "mixed", "dynamic"}
    out = capsys.readouterr().out
    assert "int8: top-1 agreement 0.5000 < 0.97" in out and "dynamic: top-1 agreement 1.0000 >= 0.97" in out
    assert "LiteRT dynamic model written" in out and "faster variants refused: int8" in out
    # predict and evaluate's auto read the choice, even beside another export
    shutil.copy(litert.default_dir(litert_run) / "float32.tflite", tmp_path / "float32.tflite")
    model_dir = tmp_path.parent / "run_with_auto"
    shutil.copytree(litert_run, model_dir, ignore=shutil.ignore_patterns("eval", "litert"))
    shutil.copytree(tmp_path, litert.default_dir(model_dir))
    assert litert.find_export(model_dir).quantize == "dynamic"
    assert predictors.open_predictor(str(model_dir), "litert").source.endswith("dynamic.tflite")


def test_auto_refuses_in_one_line_and_writes_nothing_when_no_variant_reaches_the_floor(litert_run, tmp_path,
                                                                                        agreement_of):
    agreement_of.update({name: 0.5 for name in litert.QUANTIZATIONS})
    with pytest.raises(litert_export.ParityError) as raised:
        _export(litert_run, tmp_path / "litert", litert.AUTO, min_agreement=0.9)
    message = str(raised.value)
    assert "\n" not in message and "nothing written" in message
    for name in litert.FASTEST_FIRST:
        assert f"{name} 0.5000 < 0.9" in message
    assert not (tmp_path / "litert").exists()


def test_labels_txt_lists_the_label_rank_in_the_order_of_its_output(litert_run):
    trained = trained_model.load_trained(litert_run)
    names = (litert.default_dir(litert_run) / litert.LABELS_NAME).read_text().splitlines()
    assert names == list(trained.names) and len(set(names)) == len(names)
    model = litert.load(litert.find_export(litert_run, "float32"))
    answers = model.probabilities(_pixels())[model.label_rank]
    assert answers.shape[1] == len(names)
    keras_top1 = trained.probabilities(_pixels())[trained.label_rank].argmax(axis=1)
    assert [names[index] for index in answers.argmax(axis=1)] == [trained.names[index] for index in keras_top1]


def test_another_models_labels_txt_is_replaced_only_with_overwrite(litert_run, tmp_path):
    (tmp_path / litert.LABELS_NAME).write_text("felidae\ncanidae\n")
    with pytest.raises(export.ExportError, match="lists the labels of another model: pass --overwrite"):
        _export(litert_run, tmp_path, "float32")
    assert not (tmp_path / "float32.tflite").exists()
    _export(litert_run, tmp_path, "float32", overwrite=True)
    assert (tmp_path / litert.LABELS_NAME).read_text() == litert.labels_text(
        trained_model.load_trained(litert_run).names)


def test_a_file_or_folder_in_the_wrong_place_is_one_line(litert_run, tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    with pytest.raises(export.ExportError, match=r"--export_dir=.*a_file is a file: name a folder"):
        _export(litert_run, tmp_path / "a_file", "float32")
    (tmp_path / "litert" / litert.LABELS_NAME).mkdir(parents=True)
    with pytest.raises(export.ExportError, match="lists the labels of another model"):
        _export(litert_run, tmp_path / "litert", "float32")


def test_auto_refuses_to_replace_any_export_it_could_write(litert_run, tmp_path):
    (tmp_path / "mixed.json").write_text("{}")
    with pytest.raises(export.ExportError, match=r"mixed\.json exists: pass --overwrite"):
        _export(litert_run, tmp_path, litert.AUTO)


def _auto_dir(litert_run: str, tmp_path: pathlib.Path) -> pathlib.Path:
    """A copy of the run whose litert/ holds float32 as if auto had chosen it."""
    model_dir = tmp_path / "run"
    shutil.copytree(litert_run, model_dir, ignore=shutil.ignore_patterns("eval", "int8.*"))
    directory = litert.default_dir(model_dir)
    record = {"chosen": "float32", "sha256": litert.sha256((directory / "float32.tflite").read_bytes())}
    (directory / litert.CHOICE_NAME).write_text(json.dumps(record))
    assert litert.find_export(model_dir).quantize == "float32"
    return model_dir


@pytest.mark.parametrize("damage, words", [
    (lambda directory: (directory / "float32.tflite").write_bytes(b"other"), "is not the model auto.json chose"),
    (lambda directory: (directory / "float32.tflite").unlink(), "cannot read the choice"),
    (lambda directory: (directory / litert.CHOICE_NAME).write_text("[1, 2"), "cannot read the choice"),
    (lambda directory: (directory / litert.CHOICE_NAME).write_text('["float32"]'), "cannot read the choice"),
    (lambda directory: (directory / litert.CHOICE_NAME).write_text('{"chosen": "../../model", "sha256": ""}'),
     "is none of float32"),
])
def test_a_broken_choice_is_one_line(litert_run, tmp_path, damage, words):
    model_dir = _auto_dir(litert_run, tmp_path)
    damage(litert.default_dir(model_dir))
    with pytest.raises(litert.LiteRTError, match=words) as raised:
        litert.find_export(model_dir)
    assert "\n" not in str(raised.value) and "--quantize" in str(raised.value)


def test_mixed_steps_reach_all_layers_but_one_float_and_each_answers(litert_run):
    """The debugger cannot denylist every layer (it found a model with none to verify): that step, float32
    under another name, is never tried."""
    trained = trained_model.load_trained(litert_run)
    judge = litert_export.Judge(trained, litert_run, litert_export.Plan("mixed"))
    with litert_export._saved_model(trained) as saved_model:
        steps = list(litert_export.mixed_steps(saved_model, judge.calibration, judge.measure))
    counts = [len(step.float_layers) for step in steps]
    assert counts[:4] == [1, 2, 3, 5] and counts == sorted(set(counts))
    assert len(steps[-1].float_layers) == len(steps[-1].layer_errors) - 1
    assert all(step.parity["images"] > 0 and step.images_per_second > 0 for step in steps)
