"""Trainer benchmark on a replica download: training steps/s on one device vs MirroredStrategy over two logical
CPU devices at the same global batch, and the phase-1 epoch time on cached embeddings vs on images.

    .venv/bin/python -m benchmarks.train_bench --families=8 --per_family=40 --backbone=mobilenetv2 --image_size=96

Any trainer flag (--backbone, --weights, --image_size, --batch_size as the global batch, ...) sets the runs'
common config. Every measurement is a `trainer.train.run` (the one training path) in a child process of its
own, so each can split the CPU before TensorFlow starts; a Keras callback times the batches and epochs. The
replica (real metadata rows, synthetic pixels) is built once into --work_dir and reused.
"""

import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import time

import keras
import pandas as pd
import tensorflow_datasets as tfds
from absl import app, flags

import tfds_rarespecies
from tfds_rarespecies import replica
from trainer import flags as trainer_flags
from trainer import train
from trainer.config import Config

_WORK_DIR = flags.DEFINE_string("work_dir", "/tmp/rare_species_train_bench", "Replica, dataset and runs go here.")
_FAMILIES = flags.DEFINE_integer("families", 8, "Families in the replica.")
_PER_FAMILY = flags.DEFINE_integer("per_family", 40, "Images per family in the replica.")
_STEPS = flags.DEFINE_integer("steps", 12, "Training steps timed per strategy (the first two are not counted).")
_EPOCHS = flags.DEFINE_integer("epochs", 3, "Phase-1 epochs per path (the first is not counted).")
_CHILD = flags.DEFINE_string("child", "", "Internal: run one measurement from this JSON Config and print it.")
BENCH_DEFAULTS = {"backbone": "mobilenetv2", "weights": "none", "image_size": 96, "batch_size": 16,
                  "class_weights": "none", "warmup_epochs": 0.0, "deterministic": True}

METADATA = pathlib.Path(__file__).parent.parent / "tests" / "data" / "rare_species_metadata.csv"
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


def build_replica(work_dir: pathlib.Path) -> str:
    """The replica's data_dir, built on the first call."""
    data_dir = work_dir / f"data_{_FAMILIES.value}x{_PER_FAMILY.value}"
    builder = tfds_rarespecies.Builder(config="small_128", data_dir=str(data_dir))
    if not builder.is_prepared():
        rows = replica.select_rows(pd.read_csv(METADATA, dtype=str, keep_default_na=False),
                                   families=_FAMILIES.value, per_family=_PER_FAMILY.value)
        download = replica.write_replica(data_dir.with_name(data_dir.name + "_download"), rows, min_side=130,
                                         max_side=300)
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(download)))
    return str(data_dir)


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
    base = dataclasses.replace(trainer_flags.config_from_flags(flags.FLAGS), data_dir=build_replica(work_dir),
                               dataset_config="small_128", seed=0)
    batch = base.batch_size

    def config(name: str, **changes) -> dict:
        return dataclasses.asdict(dataclasses.replace(base, model_dir=str(work_dir / f"{name}_{time.time_ns()}"),
                                                      **changes))

    steps = dict(phase1_epochs=0, phase2_epochs=1, steps_per_epoch=_STEPS.value, unfreeze_layers=-1)
    one = run_child(config("steps_one", strategy="one_device", **steps), "steps/s on one device")
    two = run_child(config("steps_two", strategy="mirrored", cpu_devices=2, batch_size=batch // 2, **steps),
                    "steps/s under MirroredStrategy x2")
    phase1 = dict(phase1_epochs=_EPOCHS.value, phase2_epochs=0, strategy="one_device")
    images = run_child(config("images", **phase1), "phase 1 on images")
    cached = run_child(config("cached", phase1_cached_features=True,
                              feature_cache_dir=str(work_dir / f"features_{time.time_ns()}"), **phase1),
                       "phase 1 on cached embeddings")
    print(table(base, one, two, images, cached))


def table(base: Config, one: dict, two: dict, images: dict, cached: dict) -> str:
    def steps_per_second(run):
        timed = run["batch_seconds"][WARMUP_BATCHES:]
        return len(timed) / sum(timed)

    def epoch_seconds(run):
        timed = run["epoch_seconds"][1:]
        return sum(timed) / len(timed)

    def batch_split(run):
        replicas, total = run["replicas"], run["global_batch_size"]
        return f"{replicas} x {total // replicas} = {total}"

    speedup = epoch_seconds(images) / epoch_seconds(cached)
    rows = [("measure", "A", "B", "A/B"),
            (f"train steps/s, {base.backbone} {base.input_size}px: one device (A) vs mirrored x2 (B)",
             f"{steps_per_second(one):.2f}", f"{steps_per_second(two):.2f}",
             f"{steps_per_second(one) / steps_per_second(two):.2f}"),
            ("  replicas x per-replica batch = global batch", batch_split(one), batch_split(two), ""),
            ("phase-1 seconds/epoch: images (A) vs cached embeddings (B)",
             f"{epoch_seconds(images):.3f}", f"{epoch_seconds(cached):.3f}", f"{speedup:.0f}x"),
            (f"  whole phase-1 run ({_EPOCHS.value} epochs, cache fill, evaluation), seconds",
             f"{images['run_seconds']:.1f}", f"{cached['run_seconds']:.1f}", "")]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(width) if i == 0 else cell.rjust(width)
                               for i, (cell, width) in enumerate(zip(row, widths))) for row in rows)


if __name__ == "__main__":
    for name, value in BENCH_DEFAULTS.items():
        flags.FLAGS.set_default(name, value)
    app.run(main)
