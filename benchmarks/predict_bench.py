"""CPU prediction: trainer.predict with --backend=keras against LiteRT float32 and int8, end to end.

    .venv/bin/python -m benchmarks.predict_bench --work_dir=/tmp/rare_species_predict_bench \
        --weights=MOBILENETV2_NOTOP.weights.h5

MOBILENETV2_NOTOP.weights.h5: the ImageNet MobileNetV2 weights without top, by path (Keras downloads them to
~/.keras/models/ on `keras.applications.MobileNetV2(include_top=False)`; never committed).

Two runs are trained head-only (trainer.training.train.run, phase 1 on cached embeddings) on a full-size replica
(benchmarks.replica_data, built as inception_342): InceptionV3 at 299 px (weights=none: no ImageNet weights
can be fetched here, so its agreement says less) and MobileNetV2 at 224 px with the genuine ImageNet weights of
--weights. Each is exported as LiteRT float32 and int8 (trainer.export's export, parity on validation, int8
calibrated on --calibration_images train images). Then trainer.predict's own path (predict.predict_files:
the decoding thread pool, batches of --batch_size, top-k) classifies the replica's full-size JPEGs, so decoding
counts, with each backend in turn for --rounds rounds (the models loaded once, before the timing, so every
ratio compares rates measured under the same machine load); "keras one by one" is the predict this replaced
(each file decoded, then classified alone through savedmodel.ServingModel). Prints one table: images/s, the
ratios to keras and to one by one, load time, file size, top-1 agreement with keras on those photos and the
export's parity on validation.
Targets: InceptionV3 int8 >= 2.5x keras with agreement >= 0.97; float32 agreement >= 0.999.
"""

import datetime
import os
import pathlib
import shutil
import time

import numpy as np
from absl import app, flags

from benchmarks import replica_data, table

_WORK_DIR = flags.DEFINE_string("work_dir", "/tmp/rare_species_predict_bench", "Replica, dataset and runs.")
_WEIGHTS = flags.DEFINE_string("weights", None, "MobileNetV2 ImageNet weights without top (.weights.h5).",
                               required=True)
_NUM_IMAGES = flags.DEFINE_integer("num_images", 400, "Full-size images in the replica (about 10 per family).")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Rounds of alternating measurements; the table sums them.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 16, "predict --batch_size.")
_CALIBRATION = flags.DEFINE_integer("calibration_images", 500, "int8 calibration images (train split; the "
                                     "export's default, all of them when the split is smaller).")
_EPOCHS = flags.DEFINE_integer("epochs", 8, "Head-only epochs of each run.")

MODELS = (("InceptionV3 299 px", "inceptionv3", 299, "none"), ("MobileNetV2 224 px", "mobilenetv2", 224, None))
BACKENDS = (("keras", "keras", "auto"), ("litert float32", "litert", "float32"), ("litert int8", "litert", "int8"))
OLD = "keras one by one"


def trained_run(data_dir: pathlib.Path, backbone: str, size: int, weights: str, model_dir: pathlib.Path) -> str:
    """A fresh head-only run of the backbone on the replica (an earlier one may come from another replica)."""
    from trainer.training import train  # noqa: PLC0415 (TensorFlow only once flags are parsed)
    from trainer.training.config import Config  # noqa: PLC0415

    shutil.rmtree(model_dir, ignore_errors=True)
    train.run(Config(backbone=backbone, dataset_config="inception_342", image_size=size, data_dir=str(data_dir),
                     model_dir=str(model_dir), weights=weights, augment="none", phase1_cached_features=True,
                     phase1_epochs=_EPOCHS.value, phase1_learning_rate=0.003, phase2_epochs=0, warmup_epochs=0,
                     early_stopping_patience=_EPOCHS.value, batch_size=16, strategy="one_device", seed=0))
    return str(model_dir)


def export_litert(model_dir: str) -> None:
    from trainer.serving import export  # noqa: PLC0415

    for quantize in ("float32", "int8"):
        export.export(export.ExportSettings(model_dir, format="litert", quantize=quantize, overwrite=True,
                                            calibration_images=_CALIBRATION.value, min_agreement=0.0))


def runners(model_dir: str) -> dict:
    """name -> (classify(files) -> top-1 family per predicted file, load seconds), each model loaded once."""
    from tfds_rarespecies import imaging  # noqa: PLC0415
    from trainer.serving import predict, predictors, savedmodel, trained_model  # noqa: PLC0415

    loaded = {}
    for name, backend, quantize in BACKENDS:
        start = time.perf_counter()
        predictor = predictors.open_predictor(model_dir, backend, quantize)
        loaded[name] = (lambda files, predictor=predictor: [
            prediction.names[0] for prediction in
            predict.predict_files(predictor, files, batch_size=_BATCH_SIZE.value)[0]], time.perf_counter() - start)
    start = time.perf_counter()
    serving_model = savedmodel.ServingModel(trained_model.load_trained(model_dir), top_k=1)

    def one_by_one(files):
        """trainer.predict before LiteRT: each file decoded, then classified alone (batch 1), in turn."""
        images = (imaging.decode_rgb(path.read_bytes(), min_short_side=serving_model.trained.input_size)
                  for path in files)
        return [serving_model.classify_images(np.asarray(image)[None])["names"].numpy()[0, 0].decode()
                for image in images]

    loaded[OLD] = (one_by_one, time.perf_counter() - start)
    return loaded


def measure(model_dir: str, files: list[pathlib.Path]) -> dict:
    """Per runner: [wall seconds, images, load seconds, top-1 families of the last round]."""
    loaded = runners(model_dir)
    totals = {name: [0.0, 0, load, classify(files[:_BATCH_SIZE.value])] for name, (classify, load) in loaded.items()}
    for round_ in range(_ROUNDS.value):
        print(f"  round {round_ + 1}/{_ROUNDS.value} ...", flush=True)
        for name, (classify, _) in loaded.items():
            start = time.perf_counter()
            top1 = classify(files)
            totals[name][0] += time.perf_counter() - start
            totals[name][1] += len(top1)
            totals[name][3] = top1
    return totals


def rows_of(label: str, model_dir: str, totals: dict) -> list[tuple[str, ...]]:
    from trainer.serving import litert  # noqa: PLC0415

    rates = {name: images / wall for name, (wall, images, _, _) in totals.items()}
    rows = []
    for name, backend, quantize in ((OLD, "keras", ""), *BACKENDS):
        _, _, load, top1 = totals[name]
        agreement = sum(a == b for a, b in zip(top1, totals["keras"][3])) / len(top1)
        if backend == "keras":
            size, parity = (pathlib.Path(model_dir) / "model.keras").stat().st_size, "-"
        else:
            metadata = litert.load(litert.find_export(model_dir, quantize)).metadata
            size, parity = metadata["bytes"], f"{metadata['parity']['top1_agreement']:.3f}"
        rows.append((f"{label}, {name}", f"{rates[name]:.1f}", f"{rates[name] / rates['keras']:.2f}",
                     f"{rates[name] / rates[OLD]:.2f}", f"{load:.1f}", f"{size / 1e6:.1f}", f"{agreement:.3f}",
                     parity))
    return rows


def main(argv):
    del argv
    work_dir = pathlib.Path(_WORK_DIR.value)
    load_at_start = os.getloadavg()[0]
    download, data_dir = replica_data.prepare(work_dir, _NUM_IMAGES.value)
    files = sorted(download.rglob("*.jpg"))
    rows = [("model, backend", "images/s", "x keras", "x one by one", "load s", "MB",
             "top-1 agreement with keras (photos)", "parity (validation)")]
    for label, backbone, size, weights in MODELS:
        print(f"{label}: training the head, exporting ...", flush=True)
        model_dir = trained_run(data_dir, backbone, size, weights or _WEIGHTS.value, work_dir / f"run_{backbone}")
        export_litert(model_dir)
        print(f"{label}: predicting {len(files)} photos per round", flush=True)
        rows += rows_of(label, model_dir, measure(model_dir, files))
    from trainer.serving import litert  # noqa: PLC0415

    print(f"\n{datetime.date.today()}: trainer.predict over {replica_data.describe(download)}; batch "
          f"{_BATCH_SIZE.value}, {os.cpu_count()} cores (threads = all), {_ROUNDS.value} rounds, "
          f"{litert.interpreter_class().__module__}'s interpreter, load average {load_at_start:.1f} at the start "
          f"and {os.getloadavg()[0]:.1f} at the end")
    print(table.markdown(rows))


if __name__ == "__main__":
    app.run(main)
