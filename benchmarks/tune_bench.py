"""Tuner benchmark: wall time of the same N head-only trials with phase 1 on cached embeddings vs on images.

    .venv/bin/python -m benchmarks.tune_bench --work_dir=/tmp/rare_species_tune_bench --trials=6 --epochs=3

Both studies are the real command (`python -m trainer.tune`, one child process each, one worker) over the same
replica (benchmarks.replica_data, small_128), search space (head), seed and random sampler, so both draw the
same N parameter sets and differ only in --phase1_cached_features; the pruner is off so every trial runs its
epochs. The cached study's first trial fills the embedding cache (one forward pass over train and validation),
which every later trial reads. Any trainer flag (--backbone, --weights, --image_size, --batch_size, ...) sets
the common base config; --rounds alternates the two studies so both see the same machine load.
"""

import dataclasses
import os
import pathlib
import statistics
import subprocess
import sys
import time

import optuna
from absl import app, flags, logging

from benchmarks import replica_data, table
from trainer import cli
from trainer.training import inputs
from trainer.training.config import Config
from trainer.tuning.settings import Settings

_WORK_DIR = flags.DEFINE_string("work_dir", "/tmp/rare_species_tune_bench", "Replica, dataset and studies go here.")
_FAMILIES = flags.DEFINE_integer("families", 20, "Families in the replica.")
_PER_FAMILY = flags.DEFINE_integer("per_family", 60, "Images per family in the replica.")
_TRIALS = flags.DEFINE_integer("trials", 6, "Trials per study.")
_EPOCHS = flags.DEFINE_integer("epochs", 3, "Phase-1 epochs per trial.")
_ROUNDS = flags.DEFINE_integer("rounds", 1, "Rounds of the two studies, alternating; the table pools them.")
BENCH_DEFAULTS = {"backbone": "mobilenetv2", "weights": "none", "image_size": 96, "batch_size": 16,
                  "augment": "none", "warmup_epochs": 0.0}
REPO = pathlib.Path(__file__).resolve().parents[1]


def run_study(base, work_dir: pathlib.Path, name: str, cached: bool) -> dict:
    """One `python -m trainer.tune` study in a child process: its wall time and its trials."""
    config = dataclasses.replace(base, phase1_cached_features=cached, model_dir="",
                                 feature_cache_dir=str(work_dir / f"{name}_features"))
    settings = Settings(study_name=name, n_trials=_TRIALS.value, search_space="head", sampler="random",
                        pruner="none", tune_dir=str(work_dir / "studies"))
    flagfile = work_dir / f"{name}.flags"
    flagfile.write_text(cli.flagfile_text(config, settings))
    print(f"study {name} ({'cached embeddings' if cached else 'images'}) ...", flush=True)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    started, cpu_started = time.perf_counter(), table.cpu_seconds()
    done = subprocess.run([sys.executable, "-m", "trainer.tune", f"--flagfile={flagfile}"], cwd=REPO, env=env,
                          capture_output=True, text=True)
    seconds, cpu_seconds = time.perf_counter() - started, table.cpu_seconds() - cpu_started
    if done.returncode:
        raise RuntimeError(f"study {name} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    study_dir = work_dir / "studies" / name
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(study_dir / "journal.log")))
    trials = sorted(optuna.load_study(study_name=name, storage=storage).trials, key=lambda trial: trial.number)
    return {"seconds": seconds, "cpu_seconds": cpu_seconds,
            "trial_seconds": [trial.duration.total_seconds() for trial in trials],
            "params": [trial.params for trial in trials], "values": [trial.value for trial in trials]}


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # TFDS logs every dataset it opens at INFO
    work_dir = pathlib.Path(_WORK_DIR.value)
    work_dir.mkdir(parents=True, exist_ok=True)
    data_dir = replica_data.build_replica(work_dir, _FAMILIES.value, _PER_FAMILY.value)
    base = dataclasses.replace(cli.from_flags(flags.FLAGS, Config), data_dir=data_dir,
                               dataset_config="small_128", phase1_epochs=_EPOCHS.value,
                               early_stopping_patience=_EPOCHS.value, strategy="one_device")
    runs = {True: [], False: []}
    for round_ in range(_ROUNDS.value):
        for cached in (False, True):
            name = f"{'cached' if cached else 'images'}_{round_}_{time.time_ns()}"
            runs[cached].append(run_study(base, work_dir, name, cached))
    assert all(run["params"] == runs[False][0]["params"] for run in runs[True] + runs[False]), "params differ"
    print(report(base, runs[False], runs[True], data_dir))


def report(base, images: list[dict], cached: list[dict], data_dir: str) -> str:
    def mean(runs, pick):
        return statistics.mean(pick(run) for run in runs)

    def first(run):
        return run["trial_seconds"][0]

    def later(run):
        return statistics.mean(run["trial_seconds"][1:]) if len(run["trial_seconds"]) > 1 else float("nan")

    def total(run):
        return run["seconds"]

    def cpu(run):
        return run["cpu_seconds"]

    def best(run):
        return max(value for value in run["values"] if value is not None)

    rows = [("measure", "images (A)", "cached (B)", "A/B")]
    for label, pick, unit in (
            (f"{_TRIALS.value} trials: wall time of the command (startup, trials, outputs)", total, "s"),
            (f"{_TRIALS.value} trials: CPU time of the command (user + system)", cpu, "s"),
            ("first trial (cached: fills the embedding cache)", first, "s"),
            ("later trials, mean per trial", later, "s"),
            ("best validation macro-F1", best, "")):
        a, b = mean(images, pick), mean(cached, pick)
        fmt = ".4f" if not unit else ".1f"
        rows.append((label + (f", {unit}" if unit else ""), f"{a:{fmt}}", f"{b:{fmt}}",
                     "" if not unit else f"{a / b:.1f}x"))
    train_images = inputs.dataset_info(dataclasses.replace(base, model_dir="unused")).num_examples["train"]
    header = (f"{_TRIALS.value} head-only trials: {base.backbone} {base.input_size} px, weights={base.weights}, "
              f"{_EPOCHS.value} epochs over {train_images} training images at batch {base.batch_size}; random "
              f"sampler, seed {base.seed}; {len(images)} round(s); replica {data_dir}")
    ratio = mean(images, total) / mean(cached, total)
    return f"{header}\n{table.markdown(rows)}\nratio (images / cached, whole study): {ratio:.1f}x"


if __name__ == "__main__":
    cli.define_flags(flags.FLAGS, Config)
    for name, value in BENCH_DEFAULTS.items():
        flags.FLAGS.set_default(name, value)
    app.run(main)
