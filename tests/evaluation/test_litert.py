"""The LiteRT export (trainer.export --format=litert): metadata and parity, a reload in a fresh process, the
refusal under --min_agreement, predict and evaluate on --backend=litert against keras, and broken files."""

import csv
import json
import pathlib
import shutil
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pandas as pd
import pytest

from tests.evaluation.common import GOOD_FILES, pattern
from trainer import cli
from trainer.evaluation import evaluate, reports
from trainer.serving import export, litert, litert_export, predict, trained_model
from trainer.training.run_dir import RunFiles

FLOAT32_TOLERANCE = 1e-4


def _metadata(model_dir: str, quantize: str) -> dict:
    return json.loads(litert.LiteRTFiles(litert.default_dir(model_dir), quantize).metadata.read_text())


def test_export_writes_the_model_with_its_labels_and_parity(litert_run, split_sizes):
    trained = trained_model.load_trained(litert_run)
    float32, int8 = _metadata(litert_run, "float32"), _metadata(litert_run, "int8")
    for metadata in (float32, int8):
        assert metadata["labels"] == {head: list(names) for head, names in trained.label_names.items()}
        assert list(metadata["labels"]) == ["family", "phylum"] and metadata["label_rank"] == "family"
        assert metadata["label_phylum"]["cheloniidae"] == "chordata"
        assert metadata["input"]["size"] == 32 and metadata["input"]["dtype"] == "uint8"
        assert metadata["dataset"].startswith("rare_species/small_128/")
        assert metadata["parity"]["split"] == "validation"
        assert metadata["parity"]["images"] == split_sizes["validation"]
    assert float32["calibration"] is None and float32["parity"]["top1_agreement"] == 1.0
    assert float32["parity"]["max_abs_probability_difference"] < FLOAT32_TOLERANCE
    assert int8["calibration"] == {"split": "train", "images": split_sizes["train"], "seed": 0}
    assert int8["parity"]["top1_agreement"] >= 0.75  # a near-tie answer or two of the 8 may flip
    assert int8["bytes"] < 0.4 * float32["bytes"]


_RELOAD = textwrap.dedent("""
    import json, sys
    import numpy as np
    from trainer.serving import litert
    model_dir, pixels_path = sys.argv[1:]
    model = litert.load(litert.find_export(model_dir, "float32"))
    print(json.dumps({head: rows.tolist() for head, rows in model.probabilities(np.load(pixels_path)).items()}))
""")


def test_float32_reloaded_in_a_fresh_process_answers_like_keras(litert_run, tmp_path):
    pixels = np.stack([pattern(32, 32, seed) for seed in range(6)])
    np.save(tmp_path / "pixels.npy", pixels)
    result = subprocess.run([sys.executable, "-c", _RELOAD, litert_run, str(tmp_path / "pixels.npy")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    reloaded = json.loads(result.stdout.strip().splitlines()[-1])
    for head, rows in trained_model.load_trained(litert_run).probabilities(pixels).items():
        np.testing.assert_allclose(reloaded[head], rows, atol=FLOAT32_TOLERANCE)


def test_tensorflow_interpreter_answers_the_same_without_its_deprecation_warning(litert_run, monkeypatch):
    files = litert.find_export(litert_run, "float32")
    pixels = np.stack([pattern(32, 32, seed) for seed in range(3)])
    preferred = litert.load(files).probabilities(pixels)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)  # as if the extra were not installed
    assert litert.interpreter_class().__module__.startswith("tensorflow")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fallback = litert.load(files).probabilities(pixels)
    assert not [warning for warning in caught if "deprecated" in str(warning.message)]
    for head in preferred:
        np.testing.assert_allclose(fallback[head], preferred[head], atol=1e-6)


def test_export_refuses_under_min_agreement_and_keeps_nothing(litert_run, tmp_path, monkeypatch):
    measured = litert_export.parity
    monkeypatch.setattr(litert_export, "parity", lambda *args: {**measured(*args), "top1_agreement": 0.5})
    settings = export.ExportSettings(litert_run, format="litert", quantize="float16",
                                     export_dir=str(tmp_path / "litert"))
    with pytest.raises(litert_export.ParityError, match=r"0\.5000 .* under --min_agreement=0\.99") as raised:
        export.export(settings)
    assert "\n" not in str(raised.value) and "nothing written" in str(raised.value)
    assert not (tmp_path / "litert").exists() or not any((tmp_path / "litert").iterdir())


def test_an_existing_export_is_replaced_only_with_overwrite(litert_run, tmp_path):
    saved_model = export.ExportSettings(litert_run, export_dir=str(tmp_path / "saved_model"))
    export.export(saved_model)
    float32 = export.ExportSettings(litert_run, format="litert", quantize="float32")
    for settings, path in ((saved_model, tmp_path / "saved_model"),
                           (float32, litert.default_dir(litert_run) / "float32.tflite")):
        with pytest.raises(export.ExportError) as raised:
            export.export(settings)
        assert str(raised.value) == (f"{path} exists: pass --overwrite to replace it, or choose another "
                                     "--export_dir")
    before = _metadata(litert_run, "float32")["created"]
    export.export(export.ExportSettings(litert_run, format="litert", quantize="float32", overwrite=True))
    assert litert.load(litert.find_export(litert_run, "float32")).metadata["created"] >= before
    assert not [path for path in litert.default_dir(litert_run).iterdir() if path.name.startswith(".")]


def _rows(path: pathlib.Path) -> dict[str, dict[str, float]]:
    """file -> {family: probability} of a predictions CSV."""
    rows = {}
    with path.open(newline="") as stream:
        for row in csv.DictReader(stream):
            rows.setdefault(row["file"], {})[row["family"]] = float(row["probability"])
    return rows


def test_predict_on_litert_writes_what_keras_writes(litert_run, photo_folder, tmp_path, capsys):
    outputs = {}
    for name, backend, quantize in (("keras", "keras", litert.AUTO), ("float32", "litert", "float32"),
                                    ("int8", "litert", "int8")):
        outputs[name] = tmp_path / f"{name}.csv"
        predict.run(predict.PredictSettings(litert_run, 3, str(outputs[name]), backend=backend, quantize=quantize,
                                            batch_size=2), [str(photo_folder)])
    skipped = [line for line in capsys.readouterr().err.splitlines() if line.startswith(f"{predict.PROGRAM}: skipped")]
    assert len(skipped) == 3 and all("truncated.jpg: truncated" in line for line in skipped)
    keras_rows = _rows(outputs["keras"])
    assert list(keras_rows) == [str(photo_folder / name) for name in GOOD_FILES]
    float32, int8 = _rows(outputs["float32"]), _rows(outputs["int8"])
    assert list(float32) == list(int8) == list(keras_rows)
    for file, families in keras_rows.items():
        assert list(float32[file]) == list(families)
        np.testing.assert_allclose(list(float32[file].values()), list(families.values()), atol=FLOAT32_TOLERANCE)
    same_top1 = sum(list(int8[file])[0] == list(families)[0] for file, families in keras_rows.items())
    assert same_top1 >= len(keras_rows) - 1  # noise photos: one may sit near a tie that int8 rounds the other way


def test_evaluate_on_litert_writes_the_report_keras_writes(litert_run):
    config = evaluate.EvaluationConfig(litert_run, split="test", resamples=20)
    evaluate.evaluate(config)
    evaluate.evaluate(evaluate.EvaluationConfig(litert_run, split="test", resamples=20, backend="litert",
                                                quantize="float32"))
    keras_dir, litert_dir = (pathlib.Path(litert_run) / "eval" / name for name in ("test", "test_litert_float32"))
    assert sorted(path.name for path in litert_dir.iterdir()) == sorted(path.name for path in keras_dir.iterdir())
    keras_metrics, litert_metrics = (json.loads((folder / reports.METRICS_JSON).read_text())
                                     for folder in (keras_dir, litert_dir))
    assert (keras_metrics["backend"], litert_metrics["backend"]) == ("keras", "litert")
    assert litert_metrics["model"].endswith("float32.tflite")
    for name, value in keras_metrics.items():
        if isinstance(value, float):
            assert litert_metrics[name] == pytest.approx(value, abs=FLOAT32_TOLERANCE), name
    pd.testing.assert_frame_equal(pd.read_csv(litert_dir / reports.PER_CLASS_CSV),
                                  pd.read_csv(keras_dir / reports.PER_CLASS_CSV), atol=FLOAT32_TOLERANCE)


def test_which_export_predict_and_evaluate_use(litert_run, tmp_path):
    assert litert.find_export(litert_run, "int8").quantize == "int8"
    with pytest.raises(litert.LiteRTError, match=r"holds float32.tflite, int8.tflite: choose one with "
                                                  r"--quantize=float32\|int8"):
        litert.find_export(litert_run)
    with pytest.raises(litert.LiteRTError, match="float16.tflite not found; export one with `python -m "
                                                 "trainer.export .*--format=litert --quantize=float16`"):
        litert.find_export(litert_run, "float16")
    with pytest.raises(litert.LiteRTError, match="holds no .tflite"):
        litert.find_export(tmp_path)


def _broken_copy(litert_run: str, tmp_path: pathlib.Path, damage) -> str:
    """A copy of the run whose float32 export has been damaged by damage(files)."""
    model_dir = tmp_path / "run"
    shutil.copytree(litert_run, model_dir, ignore=shutil.ignore_patterns("eval", "int8.*"))
    damage(litert.LiteRTFiles(litert.default_dir(model_dir), "float32"))
    return str(model_dir)


def _random_bytes_with_matching_checksum(files: litert.LiteRTFiles) -> None:
    content = np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    files.model.write_bytes(content)
    files.metadata.write_text(json.dumps({**json.loads(files.metadata.read_text()), "sha256": litert.sha256(content)}))


@pytest.mark.parametrize("damage, words", [
    (lambda files: files.model.write_bytes(files.model.read_bytes()[:5000]), "its sha256 differs"),
    (_random_bytes_with_matching_checksum, "not a LiteRT model of this project"),
    (lambda files: files.metadata.write_text("{"), "cannot read the export's metadata"),
    (lambda files: files.metadata.unlink(), "cannot read the export's metadata")])
def test_a_broken_export_is_one_line(litert_run, tmp_path, damage, words):
    model_dir = _broken_copy(litert_run, tmp_path, damage)
    with pytest.raises(litert.LiteRTError, match=words) as raised:
        litert.load(litert.find_export(model_dir))
    assert "\n" not in str(raised.value) and "export" in str(raised.value)


@pytest.mark.slow
def test_command_line_reports_a_corrupted_tflite_in_one_line(litert_run, photo_folder, tmp_path):
    model_dir = _broken_copy(litert_run, tmp_path, _random_bytes_with_matching_checksum)
    result = subprocess.run([sys.executable, "-m", "trainer.predict", f"--model_dir={model_dir}", "--backend=litert",
                             str(photo_folder)], capture_output=True, text=True, timeout=300)
    errors = [line for line in result.stderr.splitlines() if line.startswith(f"{predict.PROGRAM}: error: ")]
    assert result.returncode == cli.EXIT_USAGE and len(errors) == 1, result.stderr[-2000:]
    assert "float32.tflite: not a LiteRT model" in errors[0] and "Traceback" not in result.stderr
    assert RunFiles(pathlib.Path(model_dir)).model.is_file()
