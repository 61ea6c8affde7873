"""trainer.predict on odd and broken files, its CSV/JSON output, and the exported SavedModel reloaded in a
fresh process."""

import csv
import io
import json
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from pipelines import images as pipeline_images
from tests.evaluation.common import GOOD_FILES, pattern
from tfds_rarespecies import labels
from trainer import cli
from trainer.serving import predict, savedmodel, trained_model

TOP_K = 3


def _skipped_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(f"{predict.PROGRAM}: skipped")]


def _check_ranked(rows: list[dict]) -> None:
    assert [row["rank"] for row in rows] == list(range(1, TOP_K + 1))
    probabilities = [row["probability"] for row in rows]
    assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1 + 1e-6
    phylum_of = labels.phylum_of("family")
    assert all(phylum_of[row["family"]] == row["phylum"] for row in rows)


def test_center_square_is_the_pipelines_evaluation_view():
    jpeg = tf.io.encode_jpeg(pattern(70, 50, 4)).numpy()
    expected = pipeline_images.decode_center(jpeg, 32).numpy()
    decoded = tf.io.decode_jpeg(jpeg, dct_method=pipeline_images.DCT_METHOD)
    got = trained_model.center_square(decoded[None], 32)[0].numpy()
    np.testing.assert_array_equal(got, expected)


def test_folder_with_a_broken_file_predicts_the_others_to_csv(trained_run, photo_folder, tmp_path, capsys):
    output = tmp_path / "out" / "predictions.csv"
    predict.run(predict.PredictSettings(trained_run, TOP_K, str(output)), [str(photo_folder)])
    skipped = _skipped_lines(capsys.readouterr().err)
    assert len(skipped) == 1 and "truncated.jpg: truncated" in skipped[0]
    with output.open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert tuple(rows[0]) == predict.csv_columns("family") == ("file", "rank", "family", "phylum", "probability")
    for row in rows:
        row["rank"], row["probability"] = int(row["rank"]), float(row["probability"])
    files = list(dict.fromkeys(row["file"] for row in rows))
    assert files == [str(photo_folder / name) for name in GOOD_FILES]
    for file in files:
        _check_ranked([row for row in rows if row["file"] == file])


def test_glob_to_json_and_table(trained_run, photo_folder, tmp_path, capsys):
    output = tmp_path / "predictions.json"
    predict.run(predict.PredictSettings(trained_run, TOP_K, str(output)), [str(photo_folder / "*.jpg")])
    entries = json.loads(output.read_text())
    assert [entry["file"] for entry in entries] == [str(photo_folder / name) for name in GOOD_FILES[:3]]
    for entry in entries:
        _check_ranked(entry["predictions"])
    capsys.readouterr()
    predict.run(predict.PredictSettings(trained_run, TOP_K), [str(photo_folder / "photo.jpg")])
    table = capsys.readouterr().out.splitlines()
    assert table[0] == str(photo_folder / "photo.jpg") and len(table) == 1 + TOP_K


def test_exit_status_and_one_line_errors(trained_run, photo_folder, tmp_path):
    cases = ((trained_run, [str(photo_folder / "truncated.jpg")], "", predict.EXIT_NOTHING_PREDICTED),
             (trained_run, [str(tmp_path / "nowhere")], "", predict.EXIT_NOTHING_PREDICTED),
             (trained_run, [], "", predict.EXIT_USAGE),
             (trained_run, [str(photo_folder)], "out.xlsx", predict.EXIT_USAGE),
             (str(tmp_path / "no_run"), [str(photo_folder)], "", predict.EXIT_USAGE),
             ("", [str(photo_folder)], "", predict.EXIT_USAGE))
    for model_dir, inputs, output, status in cases:
        with pytest.raises(cli.UserError) as raised:
            predict.run(predict.PredictSettings(model_dir, TOP_K, output), inputs)
        assert raised.value.status == status and "\n" not in str(raised.value)


def test_an_output_that_would_overwrite_a_file_of_the_run_is_refused(trained_run, photo_folder):
    before = {path: path.read_bytes() for path in pathlib.Path(trained_run).rglob("*") if path.is_file()}
    for output in ("metrics.json", "logs/phase1.csv", "eval/test/predictions.csv", "../" +
                   pathlib.Path(trained_run).name + "/calibration.json"):
        with pytest.raises(predict.PredictError, match="is a file of the run") as raised:
            predict.run(predict.PredictSettings(trained_run, TOP_K, str(pathlib.Path(trained_run) / output)),
                        [str(photo_folder)])
        assert "\n" not in str(raised.value)
    assert {path: path.read_bytes() for path in pathlib.Path(trained_run).rglob("*") if path.is_file()} == before


_RELOAD = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    export_dir, encoded_path, pixels_path = sys.argv[1:]
    loaded = tf.saved_model.load(export_dir)
    encoded = tf.constant([bytes.fromhex(line) for line in open(encoded_path).read().split()])
    answers = {"serving_default": loaded.signatures["serving_default"](images=encoded),
               "classify_images": loaded.signatures["classify_images"](images=tf.constant(np.load(pixels_path)))}
    print(json.dumps({name: {"names": [[f.decode() for f in row] for row in out["names"].numpy()],
                             "probabilities": out["probabilities"].numpy().tolist()}
                      for name, out in answers.items()}))
""")


def test_export_reloaded_in_a_fresh_process_answers_identically(trained_run, tmp_path):
    model = savedmodel.ServingModel(trained_model.load_trained(trained_run), TOP_K)
    export_dir = savedmodel.export_saved_model(model, tmp_path / "saved_model")
    encoded = []
    for seed, (height, width) in enumerate(((90, 120), (64, 40), (33, 33))):
        stream = io.BytesIO()
        Image.fromarray(pattern(height, width, seed)).save(stream, "PNG" if seed % 2 else "JPEG")
        encoded.append(stream.getvalue())
    pixels = np.stack([pattern(50, 70, seed) for seed in range(3)])
    (tmp_path / "encoded.txt").write_text("\n".join(data.hex() for data in encoded))
    np.save(tmp_path / "pixels.npy", pixels)
    result = subprocess.run([sys.executable, "-c", _RELOAD, str(export_dir), str(tmp_path / "encoded.txt"),
                             str(tmp_path / "pixels.npy")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    reloaded = json.loads(result.stdout.strip().splitlines()[-1])
    for name, in_memory in (("serving_default", model.classify_encoded(tf.constant(encoded))),
                            ("classify_images", model.classify_images(pixels))):
        np.testing.assert_allclose(reloaded[name]["probabilities"], in_memory["probabilities"].numpy(), atol=1e-6)
        assert reloaded[name]["names"] == [[f.decode() for f in row] for row in in_memory["names"].numpy()]
        assert np.shape(reloaded[name]["probabilities"]) == (3, TOP_K)


def test_the_savedmodel_decodes_a_jpeg_as_predict_does(trained_run, tmp_path):
    """Both decode with the IDCT Pillow uses (pipelines.images.DCT_METHOD): the same photo gets the same
    probabilities from the exported model as from predict, not merely close ones."""
    trained = trained_model.load_trained(trained_run)
    model = savedmodel.ServingModel(trained, TOP_K)
    files = []
    for seed, (height, width) in enumerate(((240, 320), (97, 131), (300, 200))):
        files.append(tmp_path / f"photo{seed}.jpg")
        Image.fromarray(pattern(height, width, seed)).save(files[-1], "JPEG", quality=90)
    views = np.stack([predict.decode_view(file, trained.input_size) for file in files])  # predict's pixels
    heads = trained.probabilities(views)[trained.label_rank]
    served = model.classify_encoded(tf.constant([file.read_bytes() for file in files]))
    np.testing.assert_array_equal(served["probabilities"].numpy(), -np.sort(-heads, axis=1)[:, :TOP_K])


@pytest.mark.slow
def test_command_line_reports_the_broken_file_once(trained_run, photo_folder, tmp_path):
    output = tmp_path / "predictions.json"
    result = subprocess.run([sys.executable, "-m", "trainer.predict", f"--model_dir={trained_run}",
                             str(photo_folder), f"--top_k={TOP_K}", f"--output={output}"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(_skipped_lines(result.stderr)) == 1
    assert len(json.loads(output.read_text())) == len(GOOD_FILES)
    nothing = subprocess.run([sys.executable, "-m", "trainer.predict", f"--model_dir={trained_run}",
                              str(photo_folder / "truncated.jpg")], capture_output=True, text=True, timeout=300)
    errors = [line for line in nothing.stderr.splitlines() if line.startswith(f"{predict.PROGRAM}: error: ")]
    assert nothing.returncode == predict.EXIT_NOTHING_PREDICTED and len(errors) == 1
    assert "Traceback" not in nothing.stderr
