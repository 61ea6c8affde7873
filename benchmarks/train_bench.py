"""Trainer benchmark on a replica download: training steps/s on one device vs MirroredStrategy over two logical
CPU devices at the same global batch, and the phase-1 epoch time on cached embeddings vs on images.

The real recipe (InceptionV3 at 299 px on inception_342; ~25 minutes on 2 cores, most of it the image side):

    .venv/bin/python -m benchmarks.train_bench --work_dir=/tmp/rare_species_train_bench --backbone=inceptionv3 \
        --image_size=299 --dataset_config=inception_342 --families=20 --per_family=30 --rounds=1 --steps=5

The quick default (MobileNetV2 at 96 px on small_128, ~3 minutes) for checking the benchmark itself:

    .venv/bin/python -m benchmarks.train_bench --work_dir=/tmp/rare_species_train_bench

Any trainer flag (--backbone, --weights, --image_size, --dataset_config, --batch_size as the global batch, ...)
sets the runs' common config. Every measurement is a `trainer.training.train.run` (the one training path) in a child
process of its own, so each can split the CPU before TensorFlow starts; a Keras callback times the batches and
epochs. The four measurements alternate for --rounds rounds and the table pools them, so each ratio compares
runs made under the same machine load. The replica (benchmarks.replica_data: real metadata rows, synthetic
pixels, sides just above the config's stored size) is built once into --work_dir and reused. With few steps per
epoch the per-epoch fixed costs (validation, the backup callback's save) weigh on the cached side, which the
real set's ~600 steps per epoch (batch 16) dwarf, so a small replica understates the ratio; the per-step row
shows it without them.
"""

import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import time

import keras
from absl import app, flags

from benchmarks import replica_data, table
from trainer import cli
from trainer.training import train
from trainer.training.config import Config

_WORK_DIR = flags.DEFINE_string("work_dir", "/tmp/rare_species_train_bench", "Replica, dataset and runs go here.")
_FAMILIES = flags.DEFINE_integer("families", 20, "Families in the replica.")
_PER_FAMILY = flags.DEFINE_integer("per_family", 60, "Images per family in the replica.")
_STEPS = flags.DEFINE_integer("steps", 12, "Training steps timed per strategy (the first two are not counted).")
_EPOCHS = flags.DEFINE_integer("epochs", 3, "Phase-1 epochs per path (the first is not counted).")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Rounds of the four measurements, alternating; the table pools them.")
_CHILD = flags.DEFINE_string("child", "", "Internal: run one measurement from this JSON Config and print it.")
BENCH_DEFAULTS = {"backbone": "mobilenetv2", "weights": "none", "image_size": 96, "dataset_config": "small_128",
                  "batch_size": 16,
                  "class_weights": "none", "warmup_epochs": 0.0, "deterministic": True}

WARMUP_BATCHES = 2


class Timer(keras.callbacks.Callback):
    """Wall time of every training batch and epoch (the first ones include tracing the step function)."""

    def __init__(self):
        super().__init__()
        self.batches, self.epochs = [], []

    def on_train_batch_begin(self, batch, logs=None):
        self._batch_start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.batches.append(time.perf_counter() - self._batch_start)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(time.perf_counter() - self._epoch_start)


def measure(config_json: str) -> dict:
    """One run, in this (child) process: the timings and what the run reports about its batch."""
    timer = Timer()
    started = time.perf_counter()
    results = train.run(Config(**json.loads(config_json)), extra_callbacks=[timer])
    return {"batch_seconds": timer.batches, "epoch_seconds": timer.epochs, "replicas": results["replicas"],
            "global_batch_size": results["global_batch_size"], "run_seconds": time.perf_counter() - started,
            "validation_loss": results["validation"]["loss"]}


def build_replica(work_dir: pathlib.Path, dataset_config: str) -> str:
    """The data_dir of the --families x --per_family replica built as dataset_config, on the first call."""
    return replica_data.build_replica(pathlib.Path(work_dir), _FAMILIES.value, _PER_FAMILY.value, dataset_config)


def run_child(config: dict, name: str) -> dict:
    """Runs one measurement in a fresh process and returns its JSON line."""
    print(f"measuring {name} ...", flush=True)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "",
           # oneDNN's CPU BatchNormalization fails on the empty replica batch an uneven evaluation ends with.
           "TF_ENABLE_ONEDNN_OPTS": "0"}
    done = subprocess.run([sys.executable, "-m", "benchmarks.train_bench", f"--child={json.dumps(config)}"],
                          cwd=pathlib.Path(__file__).parent.parent, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{name} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv):
    del argv
    if _CHILD.value:
        print(json.dumps(measure(_CHILD.value)))
        return
    work_dir = pathlib.Path(_WORK_DIR.value)
    base = cli.from_flags(flags.FLAGS, Config)
    base = dataclasses.replace(base, data_dir=build_replica(work_dir, base.dataset), dataset_config=base.dataset,
                               seed=0)
    batch = base.batch_size

    def config(name: str, **changes) -> dict:
        return dataclasses.asdict(dataclasses.replace(base, model_dir=str(work_dir / f"{name}_{time.time_ns()}"),
                                                      **changes))

    steps = dict(phase1_epochs=0, phase2_epochs=1, steps_per_epoch=_STEPS.value, unfreeze_layers=-1)
    phase1 = dict(phase1_epochs=_EPOCHS.value, phase2_epochs=0, strategy="one_device")
    runs = {"one": [], "two": [], "images": [], "cached": []}
    for round_ in range(_ROUNDS.value):  # alternating, so each pair is measured under the same load
        print(f"round {round_ + 1}/{_ROUNDS.value}:", flush=True)
        runs["one"].append(run_child(config("steps_one", strategy="one_device", **steps), "steps/s on one device"))
        runs["two"].append(run_child(config("steps_two", strategy="mirrored", cpu_devices=2, batch_size=batch // 2,
                                            **steps), "steps/s under MirroredStrategy x2"))
        runs["images"].append(run_child(config("images", **phase1), "phase 1 on images"))
        runs["cached"].append(run_child(config("cached", phase1_cached_features=True,
                                               feature_cache_dir=str(work_dir / f"features_{time.time_ns()}"),
                                               **phase1), "phase 1 on cached embeddings"))
    print(results(base, runs))


def results(base: Config, runs: dict) -> str:
    """The table: every figure pools the rounds (batches and epochs after each run's warm-up ones)."""
    def steps_per_second(kind):
        timed = [seconds for run in runs[kind] for seconds in run["batch_seconds"][WARMUP_BATCHES:]]
        return len(timed) / sum(timed)

    def epoch_seconds(kind):
        timed = [seconds for run in runs[kind] for seconds in run["epoch_seconds"][1:]]
        return sum(timed) / len(timed)

    def run_seconds(kind):
        return sum(run["run_seconds"] for run in runs[kind]) / len(runs[kind])

    def batch_split(kind):
        replicas, total = runs[kind][0]["replicas"], runs[kind][0]["global_batch_size"]
        return f"{replicas} x {total // replicas} = {total}"

    def row(label, a, b, fmt, ratio_fmt="{:.2f}"):
        return label, fmt.format(a), fmt.format(b), ratio_fmt.format(a / b)

    speedup = epoch_seconds("images") / epoch_seconds("cached")
    rows = [("measure", "A", "B", "A/B"),
            row(f"train steps/s, {base.backbone} {base.input_size}px: one device (A) vs mirrored x2 (B)",
                steps_per_second("one"), steps_per_second("two"), "{:.2f}"),
            ("  replicas x per-replica batch = global batch", batch_split("one"), batch_split("two"), ""),
            row("phase-1 seconds/epoch: images (A) vs cached embeddings (B)", epoch_seconds("images"),
                epoch_seconds("cached"), "{:.3f}", "{:.1f}x"),
            row("  phase-1 train steps/s: cached (A) vs images (B)", steps_per_second("cached"),
                steps_per_second("images"), "{:.1f}", "{:.1f}x"),
            (f"  whole phase-1 run ({_EPOCHS.value} epochs, cache fill, evaluation), seconds",
             f"{run_seconds('images'):.1f}", f"{run_seconds('cached'):.1f}", "")]
    return (f"\n{_FAMILIES.value} families x {_PER_FAMILY.value} replica images ({base.dataset_config}), global "
            f"batch {base.batch_size}, {_ROUNDS.value} rounds, {os.cpu_count()} cores, load average "
            f"{os.getloadavg()[0]:.1f} at the end\n" + table.markdown(rows)
            + f"\n\ncached embeddings: {speedup:.1f}x faster per phase-1 epoch with {base.backbone} at "
            f"{base.input_size} px (target >= 20 for the real recipe, inceptionv3 at 299 px)")


if __name__ == "__main__":
    cli.define_flags(flags.FLAGS, Config)
    for name, value in BENCH_DEFAULTS.items():
        flags.FLAGS.set_default(name, value)
    app.run(main)
