"""Does transfer learning really work through our code? Genuine ImageNet weights vs the same network untrained.

    W=<folder with the Keras MobileNetV2 ImageNet weights, a photo and the label names>
    .venv/bin/python -m benchmarks.transfer_check --work_dir=/tmp/transfer_check \
        --imagenet_weights=$W/mobilenet_v2_1.0_224_imagenet_notop.weights.h5 \
        --full_weights=$W/mobilenet_v2_1.0_224_imagenet.weights.h5 \
        --photo=$W/photos/parrot.jpg --labels=$W/imagenet_labels.txt

(1) With --photo: the 1000-class MobileNetV2 from --full_weights sees the photo through the project's own path
    (tfds_rarespecies.imaging decodes it as the builder would, pipelines' evaluation view takes the central
    square at 224 px, the backbone table scales it); a wrong input scale or a broken decoder shows at once
    in the top-5 ImageNet classes. --labels: 1001 lines, index 0 = background (TFLite order).
(2) trainer.training.train.run, head only (phase 1 on cached embeddings), on a replica dataset: --weights=PATH (the
    --imagenet_weights file) against --weights=none, same seed, steps and images; prints validation and test
    macro-F1 and accuracy of each side by side.
The weights are never part of the repository: pass their paths.
"""

import dataclasses
import pathlib
import shutil

import numpy as np
from absl import app, flags

from benchmarks import replica_data, table
from tfds_rarespecies import imaging

_WORK_DIR = flags.DEFINE_string("work_dir", None, "Folder for the replica dataset and the runs.", required=True)
_WEIGHTS = flags.DEFINE_string("imagenet_weights", None, "MobileNetV2 ImageNet weights without top (.weights.h5).",
                               required=True)
_FULL_WEIGHTS = flags.DEFINE_string("full_weights", "", "MobileNetV2 ImageNet weights with the 1000-class top.")
_PHOTO = flags.DEFINE_string("photo", "", "A photo to classify with --full_weights; empty = skip part (1).")
_LABELS = flags.DEFINE_string("labels", "", "ImageNet label names, 1001 lines, background first.")
_FAMILIES = flags.DEFINE_integer("families", 20, "Families in the replica dataset.")
_PER_FAMILY = flags.DEFINE_integer("per_family", 20, "Images per family in the replica dataset.")
_EPOCHS = flags.DEFINE_integer("epochs", 15, "Head-only epochs of each run.")
SIZE = 224


def classify_photo(photo: pathlib.Path, full_weights: str, labels_path: str) -> list[tuple[str, float]]:
    """Top-5 (label, probability) of the photo through the project's decoder, evaluation view and scaling."""
    import keras  # noqa: PLC0415 (TensorFlow only once flags are parsed)

    from pipelines import backbones, images  # noqa: PLC0415

    prepared = imaging.prepare(photo.read_bytes(), short_side=SIZE, quality=95)
    square = images.decode_center(prepared.jpeg, SIZE)
    scaled = backbones.get_backbone("mobilenetv2").preprocess(np.asarray(square, np.float32)[None])
    model = keras.applications.MobileNetV2(weights=full_weights, include_top=True)
    probabilities = np.asarray(model(scaled))[0]
    names = pathlib.Path(labels_path).read_text().splitlines()[1:] if labels_path else None
    top = np.argsort(probabilities)[::-1][:5]
    return [(names[i] if names else str(i), float(probabilities[i])) for i in top]


def head_only(data_dir: str, weights: str, model_dir: pathlib.Path) -> dict:
    """One head-only run of MobileNetV2 at 128 px on the replica; its results dict."""
    from trainer.training import train  # noqa: PLC0415
    from trainer.training.config import Config  # noqa: PLC0415

    config = dataclasses.replace(
        Config(), backbone="mobilenetv2", dataset_config="small_128", image_size=128, data_dir=data_dir,
        model_dir=str(model_dir), weights=weights, augment="none", phase1_cached_features=True,
        phase1_epochs=_EPOCHS.value, phase1_learning_rate=0.003, phase2_epochs=0, warmup_epochs=0,
        early_stopping_patience=_EPOCHS.value, batch_size=16, strategy="one_device", seed=0)
    return train.run(config)


def main(argv):
    del argv
    work_dir = pathlib.Path(_WORK_DIR.value)
    rows = [("check", "ImageNet weights (--weights=PATH)", "untrained (--weights=none)")]
    if _PHOTO.value:
        top = classify_photo(pathlib.Path(_PHOTO.value), _FULL_WEIGHTS.value, _LABELS.value)
        rows.append((f"top-5 of {pathlib.Path(_PHOTO.value).name}",
                     ", ".join(f"{name} {p:.3f}" for name, p in top), "-"))
    data_dir = replica_data.build_replica(work_dir, families=_FAMILIES.value, per_family=_PER_FAMILY.value)
    runs = {}
    for name, weights in (("imagenet", _WEIGHTS.value), ("none", "none")):
        run_dir = work_dir / f"run_{name}"
        shutil.rmtree(run_dir, ignore_errors=True)
        runs[name] = head_only(data_dir, weights, run_dir)
    for split in ("validation", "test"):
        for metric in ("macro_f1", "accuracy"):
            rows.append((f"{split} {metric}", f"{runs['imagenet'][split][metric]:.3f}",
                         f"{runs['none'][split][metric]:.3f}"))
    print(f"\nMobileNetV2 head only, {_FAMILIES.value} families x {_PER_FAMILY.value} replica images, "
          f"{_EPOCHS.value} epochs on cached embeddings")
    print(table.markdown(rows))


if __name__ == "__main__":
    app.run(main)
