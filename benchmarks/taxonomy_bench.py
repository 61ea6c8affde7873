"""A flat family head against hierarchical heads (phylum, class, order, family) on one frozen backbone, side by
side: how far the mistakes land, at what family macro-F1, and how much the roll-up answers at 95% precision.

    .venv/bin/python -m benchmarks.taxonomy_bench --work_dir=/tmp/rare_species_taxonomy_bench \
        --weights=MOBILENETV2_NOTOP.weights.h5

MOBILENETV2_NOTOP.weights.h5: the ImageNet MobileNetV2 weights without top, by path (Keras downloads them to
~/.keras/models/ on `keras.applications.MobileNetV2(include_top=False)`; never committed).

The replica (benchmarks.replica_data) has real metadata rows with pixels built from the taxonomy
(tfds_rarespecies.replica.taxonomy_pattern: palette by class, texture by order, detail by family, tint and noise
by species), so sister families look alike as in real photos; built as standard_256. MobileNetV2 with the
genuine ImageNet weights of --weights stays frozen: each run is trainer.train.run's phase 1 on cached embeddings
(the cache is shared, so both runs see the same vectors), head only, same epochs and rate. Each run's model.keras
then predicts validation and test (trainer.evaluation.serving); both are read through the same tree
(rollup.label_tree: the flat head's family softmax summed up the tree, the hierarchical heads multiplied along
each path), thresholds for 95% precision chosen on validation, applied to test.
Columns: family macro-F1, average mistake severity (LCA height of the family mistakes: 1 sister family in the
order ... 4 another phylum), coverage at 95% roll-up precision, and the training time of each.
Target: hierarchical heads cut the severity by >= 20% at a family macro-F1 no more than 1 point lower.
"""

import dataclasses
import datetime
import pathlib
import shutil
import time

import numpy as np
from absl import app, flags

from benchmarks import replica_data, table

_WORK_DIR = flags.DEFINE_string("work_dir", "/tmp/rare_species_taxonomy_bench", "Replica, dataset and runs.")
_WEIGHTS = flags.DEFINE_string("weights", None, "MobileNetV2 ImageNet weights without top (.weights.h5).",
                               required=True)
_PER_FAMILY = flags.DEFINE_integer("per_family", 16, "Images per family in the replica (202 families).")
_EPOCHS = flags.DEFINE_integer("epochs", 30, "Head-only epochs of each run.")
_AUX_WEIGHT = flags.DEFINE_float("aux_loss_weight", 0.5, "Loss weight of the phylum, class and order heads.")
_PRECISION = flags.DEFINE_float("precision", 0.95, "Roll-up precision target.")

RUNS = (("flat family head", ()), ("hierarchical heads", ("phylum", "class", "order", "family")))


def train(data_dir: str, model_dir: pathlib.Path, heads: tuple[str, ...], cache: pathlib.Path) -> float:
    """Trains one run (phase 1 on cached embeddings); returns its wall time in seconds."""
    from trainer import train as train_lib  # noqa: PLC0415 (TensorFlow after the flags are parsed)
    from trainer.config import Config  # noqa: PLC0415

    config = Config(data_dir=data_dir, dataset_config="standard_256", model_dir=str(model_dir),
                    backbone="mobilenetv2", weights=_WEIGHTS.value, heads=heads,
                    aux_loss_weight=_AUX_WEIGHT.value if heads else 0.0, phase1_epochs=_EPOCHS.value,
                    phase1_cached_features=True, feature_cache_dir=str(cache), phase1_learning_rate=3e-3,
                    phase2_epochs=0, class_weights="none", warmup_epochs=0, early_stopping_patience=_EPOCHS.value)
    start = time.perf_counter()
    train_lib.run(config)
    return time.perf_counter() - start


def judged(model_dir: pathlib.Path, data_dir: str) -> dict:
    """Family macro-F1, mistake severity and roll-up coverage on test of one run, read through its tree."""
    import pipelines  # noqa: PLC0415
    from tfds_rarespecies import labels  # noqa: PLC0415
    from trainer import inputs  # noqa: PLC0415
    from trainer.evaluation import metrics, rollup, serving  # noqa: PLC0415

    trained = serving.load_trained(model_dir)
    tree = rollup.label_tree(trained.label_names)
    view = inputs.evaluation_view(pipelines.InputConfig.for_backbone("mobilenetv2", data_dir, 32,
                                                                     dataset_config="standard_256"))
    cfg = dataclasses.replace(view, heads=labels.RANKS)  # the true ids at every rank
    outcome = {}
    for split in ("validation", "test"):
        heads, truth = {}, []
        for images, ids in pipelines.make_dataset(cfg, split, training=False):
            for head, rows in trained.probabilities(images).items():
                heads.setdefault(head, []).append(rows)
            truth.append(np.stack([ids[rank].numpy() for rank in tree.ranks], axis=1))
        predicted, confidences = tree.predictions({head: np.concatenate(rows) for head, rows in heads.items()})
        outcome[split] = (predicted, confidences, np.concatenate(truth))
    (valid_ids, valid_conf, valid_truth), (ids, conf, truth) = outcome["validation"], outcome["test"]
    thresholds = rollup.precision_thresholds(valid_conf, valid_ids == valid_truth, _PRECISION.value)
    return {"macro_f1": metrics.macro_f1(truth[:, -1], ids[:, -1]),
            "severity": metrics.mistake_severity(truth[:, -1], ids[:, -1], tree.lca_heights()),
            "coverage": rollup.rollup_outcomes(ids, conf, truth, thresholds, tree.ranks)["coverage"]}


def main(argv):
    del argv
    work_dir = pathlib.Path(_WORK_DIR.value)
    data_dir = replica_data.build_replica(work_dir, families=202, per_family=_PER_FAMILY.value,
                                          config="standard_256", pixels="taxonomy")
    rows = [("heads", "family macro-F1", "mistake severity", f"coverage at {_PRECISION.value:.0%} precision",
             "train s")]
    figures = {}
    for name, heads in RUNS:
        model_dir = work_dir / "runs" / name.replace(" ", "_")
        shutil.rmtree(model_dir, ignore_errors=True)  # a fresh run each time: its time is the training's
        seconds = train(data_dir, model_dir, heads, work_dir / "features")
        figures[name] = dict(judged(model_dir, data_dir), seconds=seconds)
        f = figures[name]
        rows.append((name, f"{f['macro_f1']:.3f}", f"{f['severity']:.2f}", f"{f['coverage']:.3f}",
                     f"{f['seconds']:.0f}"))
    flat, hierarchical = (figures[name] for name, _ in RUNS)
    print(f"taxonomy replica (202 families x {_PER_FAMILY.value}, standard_256), frozen MobileNetV2 ImageNet, "
          f"{_EPOCHS.value} head epochs, {datetime.date.today()}")
    print(table.markdown(rows))
    print(f"severity {hierarchical['severity'] / flat['severity'] - 1:+.0%} (target <= -20%), family macro-F1 "
          f"{100 * (hierarchical['macro_f1'] - flat['macro_f1']):+.1f} points (target >= -1)")


if __name__ == "__main__":
    app.run(main)
