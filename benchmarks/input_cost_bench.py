"""CPU cost per image of each backbone's training input, and the host cores that would feed 1 and 8 GPUs.

    .venv/bin/python -m benchmarks.input_cost_bench --work_dir=/tmp/rare_species_cost_bench --num_images=300

For every distinct input of pipelines' backbone table (stored config, input size, scaling):
pipelines.make_dataset's training batches, stored size to input size with the shipped recipes' augmentation
(--augment=recipe on the CPU, the host's worst case: configs/inceptionv3.flags moves it to the device), with
the default decoded-image cache on, timed after the epoch that fills it (a run's steady state), and with it
off (every crop decoded from its JPEG: a split too large for --train_cache_gib). All inputs are timed in
alternation for --rounds rounds, so their ratios compare CPU costs measured under the same load; CPU ms/image
is this process's CPU time (all threads) over the images delivered.

Host cores needed = published per-GPU training rate x CPU seconds per image (the pipeline scales with cores as
long as its parallel maps have work). The rates are NVIDIA's published TensorFlow training throughputs for
ResNet-50 v1.5 at 224 px, mixed precision + XLA, batch 256 per GPU, NGC container 20.06-tf1 (NVIDIA
DeepLearningExamples, TensorFlow/Classification/ConvNets/resnet50v1.5/README.md, "Training performance
results"): 1x A100 40GB 2,375 img/s and 8x 17,400 img/s (DGX A100); 1x V100 16GB 1,270 img/s and 8x 9,510 img/s
(DGX-1). No figure for our other backbones was at hand (no internet here), so every row uses these: a ResNet-50
class rate. InceptionV3/Xception at 299 px cost more GPU work per image (fewer cores needed than shown); the
mobile backbones (MobileNetV2, EfficientNetB0) train faster (more cores needed than shown).

The replica's pixels are synthetic (benchmarks.replica_data), so decode costs follow its JPEGs, not real photos.
"""

import dataclasses
import gc
import math
import os
import pathlib

from absl import app, flags

import pipelines
from benchmarks import replica_data, table

_WORK_DIR = flags.DEFINE_string("work_dir", "/tmp/rare_species_cost_bench", "Replica download and built dataset.")
_NUM_IMAGES = flags.DEFINE_integer("num_images", 300, "Images in the replica.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Batch size of every measurement.")
_BATCHES = flags.DEFINE_integer("batches", 15, "Batches timed per round and input, after the cache's epoch.")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Rounds of alternating measurements; the table sums them.")
_AUGMENT = flags.DEFINE_string("augment", "recipe", "Augmentation recipe (the shipped flagfiles' recipe).")

# (GPU, GPUs): images/s, NVIDIA's ResNet-50 v1.5 TensorFlow training, mixed precision + XLA (see the docstring).
PUBLISHED = {("A100", 1): 2375, ("A100", 8): 17400, ("V100", 1): 1270, ("V100", 8): 9510}
WARMUP = 3  # batches after the cache's epoch, before timing


def inputs_of_the_table(data_dir: pathlib.Path, batch_size: int, augment: str) -> dict[str, pipelines.InputConfig]:
    """One InputConfig per distinct (stored config, input size, scaling), named by the backbones sharing it."""
    grouped: dict[tuple, list[str]] = {}
    for name, row in pipelines.BACKBONES.items():
        grouped.setdefault((row.dataset_config, row.input_size, row.preprocessing), []).append(name)
    return {", ".join(names): pipelines.InputConfig.for_backbone(names[0], str(data_dir), batch_size, augment=augment)
            for names in grouped.values()}


def main(argv):
    del argv
    work_dir = pathlib.Path(_WORK_DIR.value)
    download = replica_data.write_download(work_dir / "download", num_images=_NUM_IMAGES.value)
    configs = inputs_of_the_table(work_dir / "data", _BATCH_SIZE.value, _AUGMENT.value)
    for stored in sorted({cfg.dataset_config for cfg in configs.values()}):
        replica_data.build(download, work_dir / "data", stored)
    totals = {(name, cache): [0.0, 0.0, 0] for name in configs for cache in (True, False)}  # wall s, CPU s, images
    for round_ in range(_ROUNDS.value):
        print(f"round {round_ + 1}/{_ROUNDS.value} ...", flush=True)
        for (name, cache), total in totals.items():
            cfg = configs[name] if cache else dataclasses.replace(configs[name], train_cache_bytes=0)
            iterator = iter(pipelines.make_dataset(cfg, "train", training=True))
            warmup = pipelines.steps_per_epoch(cfg) + WARMUP  # past the epoch that fills the cache
            table.time_batches(iterator, warmup, _BATCHES.value, cfg.batch_size, total)
            del iterator
            gc.collect()
    print(f"\n{replica_data.describe(download)}; batch {_BATCH_SIZE.value}, augment={_AUGMENT.value} on the CPU, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end")
    print(results(configs, totals))


def results(configs: dict[str, pipelines.InputConfig], totals: dict) -> str:
    gpus = list(PUBLISHED)
    rows = [("backbones", "stored -> input", "CPU ms/image", "vs first", "no cache", *(f"cores {n}x{gpu}" for gpu, n
                                                                                      in gpus))]
    first = None
    for name, cfg in configs.items():
        seconds, uncached = (totals[name, cache][1] / totals[name, cache][2] for cache in (True, False))
        first = first or seconds
        rows.append((name, f"{cfg.dataset_config} -> {cfg.image_size}", f"{seconds * 1000:.2f}",
                     f"{seconds / first:.2f}", f"{uncached * 1000:.2f}",
                     *(str(math.ceil(PUBLISHED[gpu] * seconds)) for gpu in gpus)))
    return table.markdown(rows) + ("\n\nCPU ms/image: the steady state (decoded-image cache on, after the epoch "
                                   "that fills it); no cache: --train_cache_gib=0 (every crop decoded from the JPEG). "
                                   "Cores: the cached cost at NVIDIA's ResNet-50 rates (docstring).")


if __name__ == "__main__":
    app.run(main)
