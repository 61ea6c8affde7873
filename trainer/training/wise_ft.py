"""WiSE-FT (Wortsman et al., "Robust fine-tuning of zero-shot models", CVPR 2022): the weights of the linear
probe and of the fine-tuned model, averaged as (1 - alpha) * probe + alpha * fine-tuned over the whole model
(the probe's backbone is the pretrained one); +0.8 to 3.3 points on transfer sets in the paper.

--wise_ft=ALPHA takes that alpha; --wise_ft=auto picks it on validation macro-F1 (the project's metric, the
one evaluation finish() runs) over ALPHAS, the larger alpha on a tie. The probe is the best checkpoint when
phase 1 completes (kept as checkpoints/probe.weights.h5); the fine-tuned model is the best checkpoint after the
last phase, kept as checkpoints/finetuned.weights.h5 before the average replaces it as the run's best
checkpoint; the choice is recorded in wise_ft.json (and metrics.json). A rerun after a kill averages the two
kept files again (the same result); a rerun after wise_ft.json was written averages nothing.
"""

import dataclasses
import json
import shutil
from collections.abc import Callable

import keras
import numpy as np

from trainer.training.config import Config, ConfigError
from trainer.training.run_dir import RunFiles, replace_atomically, write_atomically

ALPHAS = tuple(round(0.1 * step, 1) for step in range(11))


@dataclasses.dataclass(frozen=True)
class Averaging:
    """What the average needs from the run: its files, the full model (whose weights the checkpoints hold),
    score() (validation macro-F1 of the weights the model holds now), whether this process writes (the chief)
    and agree(values) (distribute.agree: the chief's values on every worker, and a barrier)."""

    files: RunFiles
    model: keras.Model
    score: Callable[[], float]
    chief: bool
    agree: Callable


def keep_probe(config: Config, files: RunFiles, chief: bool) -> None:
    """Keeps phase 1's best checkpoint as the probe, once: called when phase 1 is complete, before phase 2
    can replace the best checkpoint (once phase 2 has begun, a missing probe stays missing: average says so)."""
    started = files.csv_log("phase2").exists() or files.done_marker("phase2").exists()
    if config.wise_ft != "off" and chief and not files.probe_weights.exists() and not started:
        replace_atomically(files.probe_weights, lambda partial: shutil.copyfile(files.best_weights, partial),
                           suffix=".weights.h5")


def average(config: Config, run: Averaging) -> None:
    """Replaces the run's best checkpoint by the WiSE-FT average (nothing with --wise_ft=off or once done)."""
    files = run.files
    [done] = run.agree([files.wise_ft.exists()])
    if config.wise_ft == "off" or done:
        return
    if not files.probe_weights.exists():
        raise ConfigError(f"--wise_ft={config.wise_ft}: the probe's weights {files.probe_weights} are missing (kept "
                          "when phase 1 completed, deleted since): rerun in a new --model_dir, or use --wise_ft=off")
    if run.chief and not files.finetuned_weights.exists():
        replace_atomically(files.finetuned_weights, lambda partial: shutil.copyfile(files.best_weights, partial),
                           suffix=".weights.h5")
    run.agree([0])  # the fine-tuned copy is complete for every worker
    probe, tuned = _weights(run.model, files.probe_weights), _weights(run.model, files.finetuned_weights)
    alphas = ALPHAS if config.wise_ft == "auto" else (float(config.wise_ft),)
    scores = {}
    for alpha in alphas:
        run.model.set_weights(mix(probe, tuned, alpha))
        if len(alphas) > 1:
            scores[alpha] = run.score()
            print(f"WiSE-FT: alpha {alpha:.1f}, validation macro-F1 {scores[alpha]:.4f}")
    alpha = max(alphas, key=lambda value: (scores.get(value, 0.0), value))
    run.model.set_weights(mix(probe, tuned, alpha))
    if run.chief:
        replace_atomically(files.best_weights, run.model.save_weights, suffix=".weights.h5")
        record = {"alpha": alpha, "chosen": "on validation macro-F1" if scores else "--wise_ft",
                  **({"validation_macro_f1": {str(key): value for key, value in scores.items()}} if scores else {})}
        write_atomically(files.wise_ft, json.dumps(record, indent=1))
        print(f"WiSE-FT: alpha {alpha:.1f} ({record['chosen']}), saved {files.best_weights}")
    run.agree([0])  # the average is the best checkpoint every worker loads next


def recorded(files: RunFiles) -> dict:
    """{"wise_ft": the recorded choice} for metrics.json, or {} when the run averaged nothing."""
    return {"wise_ft": json.loads(files.wise_ft.read_text())} if files.wise_ft.exists() else {}


def mix(probe: list[np.ndarray], tuned: list[np.ndarray], alpha: float) -> list[np.ndarray]:
    """(1 - alpha) * probe + alpha * tuned for every float array; others (counters) are the fine-tuned ones.
    At alpha 0 or 1 the result is exactly one of the two."""
    return [((1.0 - alpha) * p + alpha * t).astype(t.dtype) if np.issubdtype(t.dtype, np.floating) else t
            for p, t in zip(probe, tuned)]


def _weights(model: keras.Model, path) -> list[np.ndarray]:
    """The weights of a checkpoint of model, without the optimizer state the file may hold."""
    optimizer = getattr(model, "optimizer", None)
    model.load_weights(path, objects_to_skip=[optimizer] if optimizer else None)
    return model.get_weights()
