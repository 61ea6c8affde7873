"""The optimizer side of the transfer recipe (issue 29): weight EMA, gradient accumulation, layer-wise
learning-rate decay, and the priors of the logit-adjusted loss. WiSE-FT is trainer/training/wise_ft.py.

- EMA (--ema, --ema_momentum; Polyak averaging as timm's ModelEmaV2, big_vision and the TF Model Garden keep it):
  Keras' own machinery. The optimizer keeps the average (use_ema); keras.callbacks.SwapEMAWeights, placed after
  the resume backup in callbacks.phase_callbacks, puts it into the model for validation, early stopping and
  the best checkpoint, so finish() and every export hold the average; the backup saves the raw weights and
  the optimizer's average, so a resumed phase continues the same average.
- Gradient accumulation (--gradient_accumulation_steps): Keras' optimizer option, one update every N batches
  from their mean gradient; one replica only (check_strategy says why). The optimizer's step counter advances
  per batch and the schedule reads it, so a schedule built over the phase's batches
  (schedules.learning_rate) spans the phase whatever N. Keras updates
  the average every batch, N times per update with the weights unchanged: momentum ** (1/N) per batch is the
  requested momentum per update.
- Layer-wise decay (--layer_decay; BEiT, Bao et al. 2022, after ELECTRA, Clark et al. 2020): the backbone's
  top-level layers that hold weights, numbered 1..L from the input, train at peak * decay ** (L + 1 - i), the
  head at the peak. Keras has no per-variable rate: keras.optimizers.MultiOptimizer sends each variable to one
  optimizer per depth, each with the phase's schedule scaled (schedules.scaled); their states are the
  optimizer's variables, saved in the resume backup.
- Logit adjustment (--loss=logit_adjusted; Menon et al., ICLR 2021): the loss adds tau * log(prior) to the
  logits, priors from the training split's label counts (objectives.LogitAdjustedCrossentropy).
"""

import keras
import numpy as np

import pipelines
from trainer.training import inputs, models, schedules
from trainer.training.config import Config, ConfigError


def optimizer(config: Config, rate, model: keras.Model, backbone: keras.Model) -> keras.optimizers.Optimizer:
    """The phase's optimizer for model (whose trainable variables are set) at rate (a float or a schedule)."""
    steps = config.gradient_accumulation_steps
    options = {"gradient_accumulation_steps": steps} if steps > 1 else {}
    if config.ema:
        options.update(use_ema=True, ema_momentum=config.ema_momentum ** (1 / steps))

    def make(scale: float, name: str | None = None) -> keras.optimizers.Optimizer:
        return schedules.optimizer(config.optimizer, schedules.scaled(rate, scale), config.momentum,
                                   config.weight_decay, name=name, **options)

    depth_of = backbone_depths(backbone) if config.layer_decay != 1 else {}
    depths = sorted({depth_of.get(variable.path, 0) for variable in model.trainable_variables})
    if len(depths) <= 1:  # no decay, or the head alone (a frozen backbone): one rate
        return make(config.layer_decay ** depths[0] if depths else 1.0)
    by_depth = {depth: make(config.layer_decay ** depth,
                            f"{config.optimizer}{HEAD_SUFFIX if depth == 0 else f'_depth{depth}'}")
                for depth in depths}
    return LayerDecay(lambda variable: by_depth[depth_of.get(variable.path, 0)])


HEAD_SUFFIX = "_head"


class LayerDecay(keras.optimizers.MultiOptimizer):
    """Keras' MultiOptimizer, one optimizer per backbone depth; its learning_rate is the head's, the peak (what
    the console and logs that show one rate print)."""

    @property
    def learning_rate(self):
        return next(inner for inner in self.optimizers if inner.name.endswith(HEAD_SUFFIX)).learning_rate

    @learning_rate.setter
    def learning_rate(self, value):
        raise AttributeError("set the learning rate of each of LayerDecay.optimizers")


def check_strategy(config: Config, strategy) -> None:
    """Refuses, in one line, gradient accumulation over several replicas: Keras 3.15 (TF backend) all-reduces
    the gradients inside the conditional update it accumulates with, which tf.distribute cannot trace
    (`merge_call` in a cond: keras-team/keras#17429, tf-keras#301)."""
    replicas = strategy.num_replicas_in_sync
    if config.gradient_accumulation_steps > 1 and replicas > 1:
        raise ConfigError(f"--gradient_accumulation_steps={config.gradient_accumulation_steps} with {replicas} "
                          "replicas: Keras cannot accumulate gradients under a multi-replica tf.distribute "
                          "strategy yet; use the replicas' larger global batch instead (--batch_size, "
                          "--lr_scaling), or --strategy=one_device")


def backbone_depths(backbone: keras.Model) -> dict[str, int]:
    """Variable path -> its distance from the head in backbone layers (the last layer holding weights 1, the
    first L), a transformer counted block by block (models.backbone_units, what --unfreeze_layers counts);
    variables not listed (the head's) are at 0."""
    layers = [layer for layer in models.backbone_units(backbone) if layer.weights]
    return {variable.path: len(layers) - index for index, layer in enumerate(layers) for variable in layer.weights}


def logit_adjustments(config: Config) -> dict[str, np.ndarray] | None:
    """tau * log(prior) of every head's labels from the training split's counts (--loss=logit_adjusted), or
    None for the plain cross-entropy."""
    if config.loss != "logit_adjusted":
        return None
    cfg = inputs.input_config(config)
    return {rank: config.logit_adjustment_tau * log_priors(pipelines.label_counts(cfg, config.train_split, rank))
            for rank in config.head_ranks}


def log_priors(counts: np.ndarray) -> np.ndarray:
    """log of each label's share of the training examples; a label without any counts as one (its log prior
    stays finite, so smoothed targets that give it mass keep a finite loss)."""
    counts = np.maximum(np.asarray(counts, dtype=np.float64), 1.0)
    return np.log(counts / counts.sum()).astype(np.float32)
