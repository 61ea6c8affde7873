"""The transfer recipe's additions against the current recipe, side by side: --ema, --wise_ft=auto and
--loss=logit_adjusted, each alone, 3 seeds each, test macro-F1 at family with a 95% interval.

    .venv/bin/python -m benchmarks.recipe_bench --work_dir=/tmp/rare_species_recipe_bench \
        --weights=MOBILENETV2_NOTOP.weights.h5 [--seeds=0,1,2] [--families=30]

MOBILENETV2_NOTOP.weights.h5: the ImageNet MobileNetV2 weights without top, by path (never committed).

The taxonomy replica (benchmarks.replica_data, tfds_rarespecies.replica's "taxonomy" pixels: sister families
look alike) of --families families with every real metadata row of each, so the families keep their real long
tail (the imbalance logit adjustment is for), built as small_128. Every run is train.run with MobileNetV2 at
--image_size with the genuine ImageNet weights: phase 1 on cached embeddings (the cache shared by every run),
then phase 2 fine-tuning the last --unfreeze_layers layers on images. Sized for two shared CPU cores (~25
minutes); the figures say the size.

Runs (VARIANTS): the current recipe (the defaults: cross-entropy with --class_weights=balanced); --ema;
--wise_ft=auto; --loss=logit_adjusted (with --class_weights=none, as the flag requires). Columns: test macro-F1
(mean over seeds, 95% t interval over the seeds), its change against the current recipe (paired by seed, with
its 95% t interval), validation macro-F1, and the WiSE-FT alpha chosen per seed.
"""

import dataclasses
import datetime
import json
import pathlib
import shutil
import time

import numpy as np
from absl import app, flags
from scipy import stats

from benchmarks import replica_data, table

_WORK_DIR = flags.DEFINE_string("work_dir", "/tmp/rare_species_recipe_bench", "Replica, dataset and runs.")
_WEIGHTS = flags.DEFINE_string("weights", None, "MobileNetV2 ImageNet weights without top (.weights.h5).",
                               required=True)
_FAMILIES = flags.DEFINE_integer("families", 30, "Families of the replica, each with all its real rows.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 96, "Model input side in pixels.")
_PHASE1_EPOCHS = flags.DEFINE_integer("phase1_epochs", 15, "Head epochs on cached embeddings.")
_PHASE2_EPOCHS = flags.DEFINE_integer("phase2_epochs", 3, "Fine-tuning epochs.")
_UNFREEZE = flags.DEFINE_integer("unfreeze_layers", 30, "Backbone layers fine-tuned in phase 2.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds; each variant is trained once per seed.")


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    changes: tuple[tuple[str, object], ...] = ()


VARIANTS = (Variant("current recipe"), Variant("--ema", (("ema", True),)),
            Variant("--wise_ft=auto", (("wise_ft", "auto"),)),
            Variant("--loss=logit_adjusted", (("loss", "logit_adjusted"), ("class_weights", "none"))))


def config(data_dir: str, model_dir: pathlib.Path, variant: Variant, seed: int, cache: pathlib.Path):
    from trainer.training.config import Config  # noqa: PLC0415 (TensorFlow after the flags are parsed)

    return dataclasses.replace(Config(
        data_dir=data_dir, dataset_config="small_128", model_dir=str(model_dir), backbone="mobilenetv2",
        weights=_WEIGHTS.value, image_size=_IMAGE_SIZE.value, seed=seed, phase1_epochs=_PHASE1_EPOCHS.value,
        phase1_cached_features=True, feature_cache_dir=str(cache), phase1_learning_rate=3e-3,
        phase2_epochs=_PHASE2_EPOCHS.value, phase2_learning_rate=1e-4, unfreeze_layers=_UNFREEZE.value,
        warmup_epochs=0.5, early_stopping_patience=100), **dict(variant.changes))


def measure(work_dir: pathlib.Path, data_dir: str) -> dict:
    """{variant name: {figure: [one value per seed]}}."""
    from trainer.training import train  # noqa: PLC0415

    figures = {}
    for seed in map(int, _SEEDS.value):
        for variant in VARIANTS:
            model_dir = work_dir / "runs" / f"{variant.name.strip('-').replace('=', '_')}_seed{seed}"
            shutil.rmtree(model_dir, ignore_errors=True)
            start = time.perf_counter()
            results = train.run(config(data_dir, model_dir, variant, seed, work_dir / "features"))
            row = figures.setdefault(variant.name, {})
            for name, value in (("test", results["test"]["macro_f1"]),
                                ("validation", results["validation"]["macro_f1"]),
                                ("alpha", results.get("wise_ft", {}).get("alpha", np.nan)),
                                ("seconds", time.perf_counter() - start)):
                row.setdefault(name, []).append(value)
    return figures


def interval(values) -> str:
    """mean [95% t interval over the seeds]."""
    values = np.asarray(values, dtype=np.float64)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
    return f"{values.mean():.3f} [{low:.3f}, {high:.3f}]"


def main(argv):
    del argv
    work_dir = pathlib.Path(_WORK_DIR.value)
    data_dir = replica_data.build_replica(work_dir, families=_FAMILIES.value, per_family=None,
                                          config="small_128", pixels="taxonomy")
    figures = measure(work_dir, data_dir)
    (work_dir / "figures.json").write_text(json.dumps(figures, indent=1))
    base = np.asarray(figures[VARIANTS[0].name]["test"])
    rows = [("recipe", "test macro-F1 [95% CI]", "vs current (paired) [95% CI]", "validation macro-F1",
             "WiSE-FT alpha", "run s")]
    for variant in VARIANTS:
        f = figures[variant.name]
        change = "-" if variant is VARIANTS[0] else interval(np.asarray(f["test"]) - base)
        alphas = ",".join(f"{a:.1f}" for a in f["alpha"] if np.isfinite(a)) or "-"
        rows.append((variant.name, interval(f["test"]), change, f"{np.mean(f['validation']):.3f}", alphas,
                     f"{np.mean(f['seconds']):.0f}"))
    print(f"taxonomy replica ({_FAMILIES.value} families, all their rows, small_128), MobileNetV2 ImageNet at "
          f"{_IMAGE_SIZE.value} px: phase 1 {_PHASE1_EPOCHS.value} epochs on cached embeddings, phase 2 "
          f"{_PHASE2_EPOCHS.value} epochs on the last {_UNFREEZE.value} layers; seeds {','.join(_SEEDS.value)}; "
          f"{datetime.date.today()}")
    print(table.markdown(rows))


if __name__ == "__main__":
    app.run(main)
