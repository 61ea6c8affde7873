"""Every shipped training flagfile, shrunk to tiny sizes, across the flags users combine with it: the strategy
(one device, or MirroredStrategy on two logical CPUs), mixed precision, XLA and cached phase-1 features. Each
combination trains to the end with finite metrics, or is refused in one line before anything trains.

The full product (7 flagfiles x 2 x 2 x 2 x 2) takes an hour here; the rows below cover every flagfile under both
strategies, every pair of (strategy, other flag) value, and each refusal:
  trains   mirrored + mixed_float16 (+ cached features where the flagfile does not augment), every flagfile;
           one device + XLA, without and with mixed_float16, on the two flagfiles of the from-scratch CNN (XLA's
           CPU compile of a pretrained backbone takes from most of a minute, MobileNetV2, to several);
  refused  mirrored + XLA, every flagfile; cached features + augmentation, the augmenting flagfiles; XLA +
           augmentation as Keras layers (its warp has no XLA kernel), the flagfiles that augment on the device.
Sizes: the backbone's minimum input, 1 step per epoch, 1 epoch per phase (phase 1 only for the large
backbones: phase 2 is the same code on any backbone, and the suite's time is bounded), random weights, batches
of 3 over 2 replicas (uneven steps: 8 validation and 8 test images in global batches of 6).

Run as a script, this module is the process that trains one flagfile's rows (two logical CPUs are fixed when
TensorFlow starts) and prints one JSON line per row.
"""

import json
import math
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).parents[2]
FLAGFILES = sorted(path.stem for path in (REPO / "configs").glob("*.flags") if not path.stem.startswith("tune_"))
SMALL = ("baseline_cnn", "demo", "mobilenetv2")  # both phases (the large backbones: phase 1 only)
XLA_ON_ONE_DEVICE = ("baseline_cnn", "demo")
MIN_SIZE = {"inceptionv3": 75, "xception": 71}


def rows(flagfile: str, augments: bool, on_device: bool) -> list[dict]:
    """The combinations of one flagfile, each with the outcome expected: "trains" or the refusal's words.

    augments: the flagfile augments; on_device: ... as Keras layers in the model, whose warp XLA cannot compile
    (so its XLA row augments in tf.data, and one more row checks the refusal)."""
    mirrored, one = {"strategy": "mirrored"}, {"strategy": "one_device"}
    combos = [({**mirrored, "mixed_precision": "mixed_float16", "phase1_cached_features": not augments}, "trains"),
              ({**mirrored, "jit_compile": True, "augment_on_device": False},
               "--jit_compile under MirroredStrategy with 2 replicas")]
    if flagfile in XLA_ON_ONE_DEVICE:
        precision = "mixed_float16" if XLA_ON_ONE_DEVICE.index(flagfile) % 2 else "none"
        combos.append(({**one, "jit_compile": True, "mixed_precision": precision, "augment_on_device": False},
                       "trains"))
    if augments:
        combos.append(({**one, "phase1_cached_features": True},
                       "--phase1_cached_features caches un-augmented embeddings"))
    if on_device and augments:
        combos.append(({**one, "jit_compile": True}, "--jit_compile with --augment_on_device"))
    return [{"flags": flags, "expected": expected} for flags, expected in combos]


def _arguments(flagfile: str, data_dir: str, model_dir: pathlib.Path, flags: dict) -> list[str]:
    """The flagfile shrunk to tiny sizes, then the row's flags."""
    from trainer.training import config as config_lib

    base = config_lib.parse([f"--flagfile={REPO / 'configs' / f'{flagfile}.flags'}"])
    shrunk = [f"--flagfile={REPO / 'configs' / f'{flagfile}.flags'}", f"--data_dir={data_dir}",
              "--dataset_config=small_128", f"--model_dir={model_dir}", "--weights=none",
              f"--image_size={MIN_SIZE.get(base.backbone, 32)}", "--steps_per_epoch=1", "--phase1_epochs=1",
              f"--phase2_epochs={1 if flagfile in SMALL else 0}", "--oversample_epochs=0",
              "--oversample_f1_threshold=0", "--batch_size=3",
              "--train_cache_gib=0", "--cpu_devices=2"]
    return shrunk + [f"--{name}={value}" if not isinstance(value, bool) else f"--{'' if value else 'no'}{name}"
                     for name, value in flags.items()]


def _run_rows(flagfile: str, data_dir: str, work_dir: str) -> None:
    """This process: each row of the flagfile through train.run, one JSON line each."""
    from trainer.training import config as config_lib
    from trainer.training import train
    from trainer.training.config import ConfigError

    base = config_lib.parse([f"--flagfile={REPO / 'configs' / f'{flagfile}.flags'}"])
    for index, row in enumerate(rows(flagfile, base.augment != "none", base.augment_on_device)):
        config = config_lib.parse(_arguments(flagfile, data_dir, pathlib.Path(work_dir) / str(index), row["flags"]))
        try:
            results = train.run(config)
            outcome = {"trained": True, "replicas": results["replicas"],
                       "metrics": [results[split][name] for split in ("validation", "test")
                                   for name in ("accuracy", "macro_f1", "top5_accuracy")]}
        except ConfigError as error:
            outcome = {"trained": False, "refusal": str(error)}
        print("ROW " + json.dumps({**row, **outcome}), flush=True)


@pytest.mark.slow
@pytest.mark.parametrize("flagfile", FLAGFILES)
def test_every_combination_trains_or_is_refused_in_one_line(flagfile, tiny_data_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "",
           "TF_ENABLE_ONEDNN_OPTS": "0"}  # oneDNN's BatchNormalization fails on an uneven step's empty batch
    done = subprocess.run([sys.executable, __file__, flagfile, tiny_data_dir, str(tmp_path)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    reported = [json.loads(line[4:]) for line in done.stdout.splitlines() if line.startswith("ROW ")]
    assert len(reported) >= 2 and all(row["expected"] for row in reported)
    for row in reported:
        if row["expected"] == "trains":
            assert row["trained"], row
            assert row["replicas"] == (2 if row["flags"]["strategy"] == "mirrored" else 1)
            assert all(math.isfinite(value) and 0 <= value <= 1 for value in row["metrics"]), row
        else:
            assert not row["trained"] and row["expected"] in row["refusal"] and "\n" not in row["refusal"], row


if __name__ == "__main__":
    _run_rows(*sys.argv[1:])
