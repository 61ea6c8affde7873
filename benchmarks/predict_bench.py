"""CPU prediction: trainer.predict with --backend=keras against every LiteRT variant, end to end, and the
variant `trainer.export --quantize=auto` keeps.

    .venv/bin/python -m benchmarks.predict_bench --work_dir=/tmp/rare_species_predict_bench \
        --weights=MOBILENETV2_NOTOP.weights.h5

MOBILENETV2_NOTOP.weights.h5: the ImageNet MobileNetV2 weights without top, by path (Keras downloads them to
~/.keras/models/ on `keras.applications.MobileNetV2(include_top=False)`; never committed).

Two runs are trained head-only (trainer.training.train.run, phase 1 on cached embeddings): InceptionV3 at 299 px
on a full-size replica (benchmarks.replica_data, built as inception_342; weights=none: no ImageNet weights can
be fetched here, so its agreement says less), and MobileNetV2 at 224 px with the genuine ImageNet weights of
--weights on the 202-family taxonomy replica (202 x --per_family images, standard_256, sister families alike:
taxonomy_bench's flat head), where full-integer int8 loses the fine cues. Each is exported with
--quantize=auto (its choice, agreement, size and speed, and why the faster variants were refused, as the
command prints them), then every other variant (min_agreement=0, mixed at its floor: refused when no number of
float layers reaches it). Then trainer.predict's own path (predict.predict_files: the decoding thread pool,
batches of --batch_size, top-k) classifies --num_images of the replica's JPEGs, so decoding counts, with each
backend in turn for --rounds rounds (the models loaded once, before the timing, so every ratio compares rates
measured under the same machine load); "keras one by one" is the predict this replaced (each file decoded, then
classified alone through savedmodel.ServingModel). Prints one table: images/s, the ratios to keras and to one by
one, load time, file size and its share of float32's, top-1 agreement with keras on those photos and the
export's parity on validation.
Targets: the 202-family run keeps a variant with agreement >= 0.97, >= 2x keras end to end, at most a third of
float32's size; InceptionV3 int8 (or auto's choice) >= 2.5x keras.
"""

import dataclasses
import datetime
import json
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
_NUM_IMAGES = flags.DEFINE_integer("num_images", 400, "Photos predicted per round (InceptionV3: a full-size "
                                   "replica of this many, about 10 per family).")
_PER_FAMILY = flags.DEFINE_integer("per_family", 32, "Images per family of the 202-family replica.")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Rounds of alternating measurements; the table sums them.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 16, "predict --batch_size.")
_RECIPES = flags.DEFINE_list("recipes", ["inceptionv3", "mobilenetv2"], "Which runs, by backbone, in this order.")
_CALIBRATION = flags.DEFINE_integer("calibration_images", 500, "int8 and mixed calibration images (train split; "
                                     "the export's default, all of them when the split is smaller).")

OLD = "keras one by one"


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One benchmarked run: its backbone, weights, replica and head training."""

    label: str
    backbone: str
    size: int
    weights: str  # "none", or "" for --weights
    dataset_config: str
    epochs: int
    taxonomy_replica: bool  # the 202-family taxonomy replica, else the full-size one


RECIPES = (Recipe("InceptionV3 299 px", "inceptionv3", 299, "none", "inception_342", 8, False),
           Recipe("MobileNetV2 224 px, 202 families", "mobilenetv2", 224, "", "standard_256", 30, True))


def replica(work_dir: pathlib.Path, recipe: Recipe) -> tuple[pathlib.Path, list[pathlib.Path], str]:
    """The replica's download, --num_images of its photos to predict (spread over its families), its data_dir."""
    if recipe.taxonomy_replica:
        data_dir = replica_data.build_replica(work_dir, families=202, per_family=_PER_FAMILY.value,
                                              config=recipe.dataset_config, pixels="taxonomy")
        download = pathlib.Path(f"{data_dir}_download")
        files = sorted(download.rglob("*.jpg"))
        return download, files[::max(1, len(files) // _NUM_IMAGES.value)][:_NUM_IMAGES.value], data_dir
    download, data_dir = replica_data.prepare(work_dir, _NUM_IMAGES.value)
    return download, sorted(download.rglob("*.jpg")), str(data_dir)


def trained_run(data_dir: str, recipe: Recipe, model_dir: pathlib.Path) -> str:
    """A fresh head-only run of the recipe (an earlier one may come from another replica)."""
    from trainer.training import train  # noqa: PLC0415 (TensorFlow only once flags are parsed)
    from trainer.training.config import Config  # noqa: PLC0415

    shutil.rmtree(model_dir, ignore_errors=True)
    train.run(Config(backbone=recipe.backbone, dataset_config=recipe.dataset_config, image_size=recipe.size,
                     data_dir=data_dir, model_dir=str(model_dir), weights=recipe.weights or _WEIGHTS.value,
                     augment="none", phase1_cached_features=True, phase1_epochs=recipe.epochs,
                     phase1_learning_rate=0.003, phase2_epochs=0, warmup_epochs=0, class_weights="none",
                     early_stopping_patience=recipe.epochs, batch_size=16, strategy="one_device", seed=0))
    return str(model_dir)


def export_litert(model_dir: str) -> dict:
    """auto's export (its record), then every other variant; mixed at its floor, the rest kept whatever they
    measure."""
    from trainer.serving import export, litert, litert_export  # noqa: PLC0415

    def settings(quantize, **changes):
        return export.ExportSettings(model_dir, format="litert", quantize=quantize, overwrite=True,
                                     calibration_images=_CALIBRATION.value, **changes)

    directory = litert.default_dir(model_dir)
    shutil.rmtree(directory, ignore_errors=True)
    export.export(settings(litert.AUTO))
    record = json.loads((directory / litert.CHOICE_NAME).read_text())
    refused = {entry["quantization"] for entry in record["tried"] if not entry["kept"]}
    for quantize in litert.QUANTIZATIONS:
        if litert.LiteRTFiles(directory, quantize).model.exists() or quantize == "mixed" and quantize in refused:
            continue
        try:
            export.export(settings(quantize, min_agreement=-1.0 if quantize == "mixed" else 0.0))
        except litert_export.ParityError as error:
            print(f"  {error}")
    return record


def backends(model_dir: str) -> list[tuple[str, str, str]]:
    """(name, backend, quantize) of keras and of every LiteRT variant exported."""
    from trainer.serving import litert  # noqa: PLC0415

    present = [quantize for quantize in litert.QUANTIZATIONS
               if litert.LiteRTFiles(litert.default_dir(model_dir), quantize).model.exists()]
    return [("keras", "keras", "auto"), *((f"litert {quantize}", "litert", quantize) for quantize in present)]


def runners(model_dir: str) -> dict:
    """name -> (classify(files) -> top-1 family per predicted file, load seconds), each model loaded once."""
    from tfds_rarespecies import imaging  # noqa: PLC0415
    from trainer.serving import predict, predictors, savedmodel, trained_model  # noqa: PLC0415

    loaded = {}
    for name, backend, quantize in backends(model_dir):
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


def rows_of(label: str, model_dir: str, totals: dict, record: dict) -> list[tuple[str, ...]]:
    """One row per backend timed, and one per variant refused at its floor (no file to time)."""
    from trainer.serving import litert  # noqa: PLC0415

    rates = {name: images / wall for name, (wall, images, _, _) in totals.items()}
    float32 = litert.LiteRTFiles(litert.default_dir(model_dir), "float32").model.stat().st_size
    rows = []
    for name, backend, quantize in ((OLD, "keras", ""), *backends(model_dir)):
        _, _, load, top1 = totals[name]
        agreement = sum(a == b for a, b in zip(top1, totals["keras"][3])) / len(top1)
        if backend == "keras":
            size, parity = (pathlib.Path(model_dir) / "model.keras").stat().st_size, "-"
        else:
            metadata = litert.load(litert.find_export(model_dir, quantize)).metadata
            size, parity = metadata["bytes"], f"{metadata['parity']['top1_agreement']:.3f}"
        chosen = " (auto's choice)" if backend == "litert" and quantize == record["chosen"] else ""
        rows.append((f"{label}, {name}{chosen}", f"{rates[name]:.1f}", f"{rates[name] / rates['keras']:.2f}",
                     f"{rates[name] / rates[OLD]:.2f}", f"{load:.1f}", f"{size / 1e6:.1f}",
                     f"{size / float32:.2f}" if backend == "litert" else "-", f"{agreement:.3f}", parity))
    for entry in record["tried"]:
        if not litert.LiteRTFiles(litert.default_dir(model_dir), entry["quantization"]).model.exists():
            rows.append((f"{label}, litert {entry['quantization']} (refused, {entry['float_layers']} layers float)",
                         "-", "-", "-", "-", f"{entry['bytes'] / 1e6:.1f}", f"{entry['bytes'] / float32:.2f}", "-",
                         f"{entry['top1_agreement']:.3f}"))
    return rows


def main(argv):
    del argv
    work_dir = pathlib.Path(_WORK_DIR.value)
    load_at_start = os.getloadavg()[0]
    rows = [("model, backend", "images/s", "x keras", "x one by one", "load s", "MB", "of float32's size",
             "top-1 agreement with keras (photos)", "parity (validation)")]
    described = []
    for recipe in sorted((r for r in RECIPES if r.backbone in _RECIPES.value),
                         key=lambda r: _RECIPES.value.index(r.backbone)):
        print(f"{recipe.label}: training the head, exporting ...", flush=True)
        download, files, data_dir = replica(work_dir, recipe)
        model_dir = trained_run(data_dir, recipe, work_dir / f"run_{recipe.backbone}")
        record = export_litert(model_dir)
        print(f"{recipe.label}: predicting {len(files)} photos per round", flush=True)
        rows += rows_of(recipe.label, model_dir, measure(model_dir, files), record)
        described.append(f"{recipe.label}: {replica_data.describe(download)}, {len(files)} predicted")
    from trainer.serving import litert  # noqa: PLC0415

    print(f"\n{datetime.date.today()}: trainer.predict; {'; '.join(described)}; batch {_BATCH_SIZE.value}, "
          f"{os.cpu_count()} cores (threads = all), {_ROUNDS.value} rounds, "
          f"{litert.interpreter_class().__module__}'s interpreter, load average {load_at_start:.1f} at the start "
          f"and {os.getloadavg()[0]:.1f} at the end")
    print(table.markdown(rows))


if __name__ == "__main__":
    app.run(main)
