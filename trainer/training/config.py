"""The training configuration: one frozen dataclass, each field a command-line flag of the same name.

Each field's help text, choices and bounds live here, next to its default, and trainer/cli.py makes the absl
flags from them, so a flag cannot drift from the field it fills. `validate` turns every contradiction a person
can type into one ConfigError line saying which flag, what is wrong and what to do; `flagfile_text` writes a
config back as the flagfile that reproduces it.
"""

import dataclasses
import math
import os

from pipelines import augmentation, backbones, balancing
from tfds_rarespecies.labels import RANKS
from trainer import cli
from trainer.cli import field


class ConfigError(cli.UserError):
    """A configuration that cannot run; the message is the one line shown to the user."""


MIXED_PRECISION_POLICIES = ("none", "mixed_float16", "mixed_bfloat16")
# Flags that change what a run shows, not what it trains: a resume may set them otherwise.
PRESENTATION_FLAGS = ("progress", "tensorboard_images")
PROGRESS_MODES = ("auto", "bar", "line", "none")
# --aux_loss_weight's default: benchmarks/taxonomy_bench.py's weight of the phylum, class and order heads, the
# only weight with figures behind it (BUILD-notes.md, "hierarchical vs flat heads").
AUX_LOSS_WEIGHT = 0.5


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything one training run needs; `python -m trainer.main --helpfull` documents each field."""

    # Where data comes from and results go.
    data_dir: str = field("~/tensorflow_datasets", "TFDS data_dir holding the built rare_species dataset.",
                          group="data", path=True)
    dataset_config: str = field("", "rare_species builder config to read; empty = the backbone's (see "
                                    "pipelines/backbones.py).", group="data")
    train_split: str = field("train", "TFDS split to train on (e.g. train+validation for the 90/10 protocol).",
                             group="data")
    validation_split: str = field("validation", "TFDS split for model selection and early stopping.", group="data")
    test_split: str = field("test", "TFDS split the best checkpoint is evaluated on once, at the end: the run's "
                                    "final test; empty = none (the tuner's trials never read test).", group="data")
    model_dir: str = field("", "Run directory: flags.txt, checkpoints, logs, metrics.json, model.keras. "
                               "Rerunning the same command in it resumes an interrupted run.",
                           group="outputs", path=True)
    progress: str = field("auto", "What each epoch prints: bar (Keras' progress bar), line (one plain line per "
                                  "epoch, no terminal escapes: for logs in files), none; auto = bar on a terminal, "
                                  "else line. Not part of the run: a resume may change it.",
                          PROGRESS_MODES, group="outputs")
    tensorboard_images: bool = field(True, "Draw the run's TensorBoard images (a batch of augmented inputs, the "
                                           "validation confusion by phylum, the worst classes' mistakes): about "
                                           "2 s per run. Not part of the run.", group="outputs")

    # The network.
    backbone: str = field("inceptionv3", "Backbone from pipelines/backbones.py.",
                           tuple(sorted(backbones.BACKBONES)), group="model")
    image_size: int = field(0, "Side of the square model input in pixels; 0 = the backbone's native size.", lower=0,
                            group="model")
    weights: str = field("imagenet", "Backbone weights: pretrained (the published ones: Keras' ImageNet download "
                                     "or the keras-hub preset), imagenet (its alias for the keras.applications "
                                     "backbones), none (random init), or a path: a .h5/.weights.h5 file of the same "
                                     "backbone without top, or a saved keras-hub preset directory (dinov2_*, "
                                     "siglip2_*; docs/train.md).",
                         group="model", path=True)
    drop_path: float = field(0.0, "Stochastic depth (drop-path) rate of the backbone's blocks; 0 = off. No "
                                  "backbone's library has a working one yet (keras-hub 0.32's DINOv2 layer "
                                  "cannot train): above 0 is refused (docs/train.md).", lower=0, upper=0.9,
                             group="model")
    pool_dropout: float = field(0.5, "Dropout rate after global average pooling.", lower=0, upper=0.99, group="model")
    dense_units: int = field(256, "Units of the head's hidden Dense (ReLU) layer; 0 = no hidden layer.", lower=0,
                             group="model")
    l2: float = field(1e-3, "L2 penalty on the head's hidden Dense kernel.", lower=0, group="model")
    dense_dropout: float = field(0.3, "Dropout rate after the head's hidden Dense layer.", lower=0, upper=0.99,
                                 group="model")
    label_rank: str = field("family", "The rank the model names: its softmax picks the best checkpoint, and "
                                      "class weights, balanced sampling and oversampling count its labels.", RANKS,
                            group="model")
    heads: tuple[str, ...] = field((), "Ranks with a softmax each on the shared embedding, --label_rank among "
                                       "them (e.g. phylum,family); empty = --label_rank alone.", group="model")
    aux_loss_weight: float = field(AUX_LOSS_WEIGHT, "Loss weight of each head --heads lists besides "
                                   "--label_rank's (which weighs 1). The default is the weight the "
                                   "hierarchical heads were benchmarked with (BUILD-notes.md: fewer severe "
                                   "mistakes at no loss of macro-F1); 0 with other heads is refused (they would "
                                   "learn nothing); unused without other heads.", lower=0, group="model")
    augment: str = field("none", "Training augmentation recipe (pipelines/augmentation.py).",
                          tuple(augmentation.RECIPES), group="augmentation")
    augment_strength: float = field(1.0, "Scales every augmentation magnitude (1 = the recipe as named).", lower=0,
                                    group="augmentation")
    augment_on_device: bool = field(False, "Run the augmentation as Keras layers at the front of the model "
                                           "(on the accelerator) instead of in tf.data on the CPU (OpenCV, "
                                           "pipelines/cpu_augmentation.py; same transforms).", group="augmentation")
    mixup_alpha: float = field(0.0, "MixUp Beta(alpha, alpha) (0 = off); always in tf.data.", lower=0,
                               group="augmentation")
    cutmix_alpha: float = field(0.0, "CutMix Beta(alpha, alpha) (0 = off); always in tf.data.", lower=0,
                                group="augmentation")

    # The two phases (then the optional oversampling phase).
    phase1_epochs: int = field(10, "Epochs training the head with the backbone frozen; 0 skips the phase.", lower=0,
                               group="phases")
    phase1_learning_rate: float = field(1e-3, "Peak learning rate of phase 1 at --reference_batch_size.", lower=0,
                                        group="phases")
    phase1_cached_features: bool = field(False, "Train phase 1 on cached backbone embeddings (seconds per "
                                                "epoch); needs --augment=none.", group="phases")
    feature_cache_dir: str = field("", "Where cached embeddings live (shared across runs and trials); empty = "
                                       "<model_dir>/features.", group="phases", path=True)
    phase2_epochs: int = field(20, "Epochs fine-tuning the last --unfreeze_layers backbone layers; 0 skips.", lower=0,
                               group="phases")
    phase2_learning_rate: float = field(3e-5, "Peak learning rate of phase 2 at --reference_batch_size.", lower=0,
                                        group="phases")
    unfreeze_layers: int = field(40, "Backbone layers (counted from the top) trained in phase 2, "
                                     "BatchNormalization excepted when the backbone is pretrained; -1 = all.",
                                 lower=-1, group="phases")
    oversample_f1_threshold: float = field(0.0, "After phase 2, oversample the families whose validation F1 "
                                                "is below this and train --oversample_epochs more; 0 = off.", lower=0,
                                           group="phases")
    oversample_epochs: int = field(0, "Epochs of the oversampling phase (at the phase-2 learning rate).", lower=0,
                                   group="phases")
    oversample_extra_views: int = field(2, "Extra copies per epoch of each image of an under-threshold family.",
                                        lower=0, group="phases")
    lr_schedule: str = field("cosine", "cosine: linear warmup then cosine decay per phase; constant: the peak "
                                       "rate, reduced on validation plateaus.", ("cosine", "constant"),
                             group="optimisation")
    warmup_epochs: float = field(1.0, "Linear warmup length of each phase, in epochs (cosine schedule).", lower=0,
                                 group="optimisation")
    final_learning_rate_fraction: float = field(0.01, "Cosine decay ends at this fraction of the peak rate.",
                                                lower=0, upper=1, group="optimisation")
    optimizer: str = field("adam", "Optimizer.", ("adam", "adamw", "sgd"), group="optimisation")
    momentum: float = field(0.9, "SGD momentum.", lower=0, upper=1, group="optimisation")
    weight_decay: float = field(1e-4, "AdamW decoupled weight decay.", lower=0, group="optimisation")
    label_smoothing: float = field(0.1, "Label smoothing of the cross-entropy losses.", lower=0, upper=0.99,
                                   group="optimisation")
    soft_labels_beta: float = field(0.0, "Hierarchy-aware soft labels (Bertinetto et al., CVPR 2020): each head's "
                                         "target is exp(-beta * LCA height to the truth), normalised, so near "
                                         "misses cost less; smaller is softer (e.g. 4); 0 = one-hot.", lower=0,
                                    group="optimisation")
    # The transfer recipe (trainer/training/recipe.py, wise_ft.py; docs/train.md "Transfer recipe").
    loss: str = field("cross_entropy", "logit_adjusted: the logit-adjusted loss for long tails (Menon et al., "
                                       "ICLR 2021): logits + tau * log(training prior); the outputs stay plain. "
                                       "Instead of --class_weights and --sampling_temperature, not with them.",
                      ("cross_entropy", "logit_adjusted"), group="optimisation")
    logit_adjustment_tau: float = field(1.0, "Tau of --loss=logit_adjusted (1 = the paper's).", lower=0,
                                        group="optimisation")
    ema: bool = field(False, "Validate, checkpoint and export the exponential moving average of the weights "
                             "(Polyak averaging, as timm and big_vision recipes keep it); resumes with the run.",
                      group="optimisation")
    ema_momentum: float = field(0.99, "Momentum of --ema per optimizer update (an average over ~1/(1-m) "
                                      "updates: raise it for long phases, e.g. 0.9998 as timm).", lower=0,
                                upper=0.999999, group="optimisation")
    wise_ft: str = field("off", "WiSE-FT (Wortsman et al., CVPR 2022): average the phase-1 (probe) and "
                                "fine-tuned weights, (1-alpha)*probe + alpha*fine-tuned: off, auto (alpha "
                                "chosen on validation macro-F1, recorded in wise_ft.json) or ALPHA in [0, 1].",
                         group="optimisation")
    layer_decay: float = field(1.0, "Layer-wise learning-rate decay (BEiT, Bao et al. 2022): backbone layer i of "
                                    "L trains at peak * decay^(L+1-i), the head at the peak; 1 = off. Transformer "
                                    "blocks: ~0.65-0.75; a CNN counts each layer holding weights: ~0.98.",
                                lower=0, upper=1, group="optimisation")
    gradient_accumulation_steps: int = field(1, "Update the weights once every N batches, from their mean "
                                                "gradient (a global batch N times larger); 1 = every batch.",
                                             lower=1, group="optimisation")
    early_stopping_patience: int = field(5, "Epochs without a better validation macro-F1 before a phase stops.",
                                         lower=1, group="phases")
    plateau_patience: int = field(2, "Epochs without improvement before ReduceLROnPlateau halves a constant "
                                     "learning rate.", lower=1, group="optimisation")
    steps_per_epoch: int = field(0, "Training steps per epoch; 0 = one pass over the training split.", lower=0,
                                 group="phases")

    # Imbalance (29..300 images per family).
    class_weights: str = field("balanced", "Loss weight per family from the training counts "
                                           "(pipelines/balancing.py).",
                                ("none", *balancing.SCHEMES), group="imbalance")
    class_weight_beta: float = field(0.999, "Beta of --class_weights=effective_number.", lower=0, upper=0.999999,
                                     group="imbalance")
    sampling_temperature: float = field(1.0, "Class-balanced sampling: draw family f with probability "
                                             "~ count_f ** T; 1 = natural frequencies, 0 = uniform.", lower=0, upper=1,
                                        group="imbalance")

    # Hardware.
    strategy: str = field("auto", "auto: multi_worker when TF_CONFIG is set, mirrored over >1 GPU, else "
                                  "one_device.", ("auto", "one_device", "mirrored", "multi_worker"),
                          group="distribution")
    cpu_devices: int = field(0, "Split the CPU into this many logical devices (tests mirrored training "
                                "without GPUs; set TF_ENABLE_ONEDNN_OPTS=0, as oneDNN's BatchNormalization fails "
                                "on the empty replica batch an uneven evaluation ends with); 0 = leave it whole.",
                             lower=0, group="distribution")
    batch_size: int = field(32, "Batch size per replica; the global batch is this times the replicas.", lower=1,
                            group="distribution")
    train_cache_gib: float = field(8.0, "Keep the decoded stored training images in memory when this process's "
                                        "share of them fits in this many GiB (~5 for inception_342): epochs after "
                                        "the first skip JPEG decoding; crops and augmentation stay random. 0 = "
                                        "decode every step (e.g. several trials per machine short of memory).",
                                   lower=0, group="distribution")
    lr_scaling: str = field("none", "Scale learning rates with the global batch relative to "
                                    "--reference_batch_size.", ("none", "linear", "sqrt"), group="optimisation")
    reference_batch_size: int = field(32, "Global batch size the learning rates are given for.", lower=1,
                                      group="optimisation")
    mixed_precision: str = field("none", "Keras mixed-precision policy; outputs stay float32.",
                                  MIXED_PRECISION_POLICIES, group="distribution")
    jit_compile: bool = field(False, "Compile training and evaluation steps with XLA.", group="distribution")
    seed: int = field(0, "Seed of weights, dropout, shuffling and augmentation.", group="reproducibility")
    deterministic: bool = field(False, "Deterministic TensorFlow ops (slower; for reproducibility tests).",
                                group="reproducibility")

    @property
    def head_ranks(self) -> tuple[str, ...]:
        """The ranks with a softmax, root first."""
        return tuple(sorted(set(self.heads) or {self.label_rank}, key=RANKS.index))

    @property
    def backbone_spec(self) -> backbones.Backbone:
        return backbones.get_backbone(self.backbone)

    @property
    def input_size(self) -> int:
        return self.image_size or self.backbone_spec.input_size

    @property
    def dataset(self) -> str:
        return self.dataset_config or self.backbone_spec.dataset_config

    @property
    def pretrained(self) -> bool:
        """Whether the backbone starts from learned weights, whose BatchNormalization statistics must be kept."""
        return self.weights != "none"


def flagfile_text(config: Config) -> str:
    """The flagfile that reproduces config (model_dir/flags.txt): every field, defaults included. A run with
    one head records --aux_loss_weight=0.0, the weight it trains with (no other head to weigh), as runs did
    before the default became AUX_LOSS_WEIGHT: so their flags.txt still names the same run and they resume."""
    if len(config.head_ranks) == 1:
        config = dataclasses.replace(config, aux_loss_weight=0.0)
    return cli.flagfile_text(config)


def parse(argv: list[str]) -> Config:
    """Config from command-line arguments without the program name, e.g. ["--flagfile=runs/x/flags.txt"]."""
    return cli.parse(argv, Config, program="trainer.main")


def validate(config: Config) -> None:
    """Raises ConfigError on the first contradiction, naming the flag to change."""
    cli.check_fields(config, ConfigError)
    if not config.model_dir:
        raise ConfigError("--model_dir is empty: name the run directory, e.g. --model_dir=runs/incv3")
    spec = config.backbone_spec
    problem = (backbones.size_problem(spec, config.input_size, config.weights)
               or backbones.weights_problem(spec, config.weights)
               or backbones.drop_path_problem(spec, config.drop_path))
    if problem:
        raise ConfigError(problem)
    _check_ranks(config)
    if config.phase1_cached_features and (config.augment != "none" or config.mixup_alpha or config.cutmix_alpha):
        raise ConfigError(f"--phase1_cached_features caches un-augmented embeddings but --augment="
                          f"{config.augment} --mixup_alpha={config.mixup_alpha} --cutmix_alpha="
                          f"{config.cutmix_alpha}: turn augmentation off or use --nophase1_cached_features")
    if config.phase1_cached_features and config.sampling_temperature != 1:
        raise ConfigError(f"--phase1_cached_features reads each embedding once per epoch but "
                          f"--sampling_temperature={config.sampling_temperature} resamples images: use "
                          "--sampling_temperature=1 or --nophase1_cached_features")
    if (config.oversample_f1_threshold > 0) != (config.oversample_epochs > 0):
        raise ConfigError(f"--oversample_f1_threshold={config.oversample_f1_threshold} with --oversample_epochs="
                          f"{config.oversample_epochs}: set both above 0 to oversample, or both to 0")
    if config.phase1_epochs + config.phase2_epochs + config.oversample_epochs <= 0:
        raise ConfigError(f"--phase1_epochs={config.phase1_epochs} --phase2_epochs={config.phase2_epochs} "
                          f"--oversample_epochs={config.oversample_epochs}: nothing to train; give a phase epochs")
    if config.jit_compile and config.augment_on_device and config.augment != "none":
        raise ConfigError(f"--jit_compile with --augment_on_device --augment={config.augment}: XLA has no kernel "
                          "for the augmentation's flip/rotation/zoom warp (ImageProjectiveTransformV3); use "
                          "--noaugment_on_device (the same augmentation in tf.data) or --nojit_compile")
    _check_recipe(config)
    if config.strategy == "multi_worker" and not os.environ.get("TF_CONFIG"):
        raise ConfigError("--strategy=multi_worker needs the TF_CONFIG environment variable (cluster and task)")


def _check_recipe(config: Config) -> None:
    """The transfer recipe's flags (trainer/training/recipe.py, wise_ft.py)."""
    if config.loss == "logit_adjusted" and (config.class_weights != "none" or config.sampling_temperature < 1):
        raise ConfigError(f"--loss=logit_adjusted corrects for the long tail itself, and --class_weights="
                          f"{config.class_weights} --sampling_temperature={config.sampling_temperature} would "
                          "correct it again (--class_weights is balanced by default): add --class_weights=none "
                          "--sampling_temperature=1, or use --loss=cross_entropy")
    if config.wise_ft not in ("off", "auto") and not _is_fraction(config.wise_ft):
        raise ConfigError(f"--wise_ft={config.wise_ft}: not off, auto or a number from 0 to 1 (the weight of the "
                          "fine-tuned model, e.g. --wise_ft=0.5)")
    if config.wise_ft != "off" and not (config.phase1_epochs and config.phase2_epochs):
        raise ConfigError(f"--wise_ft={config.wise_ft} averages the phase-1 and fine-tuned weights but "
                          f"--phase1_epochs={config.phase1_epochs} --phase2_epochs={config.phase2_epochs}: give "
                          "both phases epochs, or use --wise_ft=off")
    if config.layer_decay <= 0:
        raise ConfigError(f"--layer_decay={config.layer_decay} gives the backbone no learning rate: use a decay in "
                          "(0, 1] (1 = off), or --unfreeze_layers=0 to keep the backbone frozen")


def _is_fraction(text: str) -> bool:
    try:
        return 0 <= float(text) <= 1
    except ValueError:
        return False


def _check_ranks(config: Config) -> None:
    heads = ",".join(config.heads)
    unknown = [rank for rank in config.heads if rank not in RANKS]
    if unknown:
        raise ConfigError(f"--heads={heads}: {', '.join(unknown)} is no rank; ranks are {','.join(RANKS)}")
    if config.heads and config.label_rank not in config.heads:
        raise ConfigError(f"--heads={heads} leaves out --label_rank={config.label_rank}: add it to --heads")
    others = [rank for rank in dict.fromkeys(config.heads) if rank != config.label_rank]
    if others and not 0 < config.aux_loss_weight < math.inf:
        raise ConfigError(f"--aux_loss_weight={config.aux_loss_weight} with --heads={heads}: the weight of the "
                          f"{', '.join(others)} head{'s' if len(others) > 1 else ''} must be finite and above 0 (at "
                          f"0 a head learns nothing); leave --aux_loss_weight at its default {AUX_LOSS_WEIGHT} or "
                          f"give another, or list only --heads={config.label_rank}")
    if not others and config.aux_loss_weight not in (0, AUX_LOSS_WEIGHT):
        example = ",".join(RANKS[:2] if config.label_rank == RANKS[0] else (RANKS[0], config.label_rank))
        raise ConfigError(f"--aux_loss_weight={config.aux_loss_weight} with --heads={heads}: give other ranks a "
                          f"weight above 0 by listing them with --label_rank (e.g. --heads={example}), or leave "
                          f"--aux_loss_weight at its default")
    if config.label_rank == "species" and "species_disjoint" in config.dataset:
        raise ConfigError(f"--label_rank=species with --dataset_config={config.dataset}: no validation or test "
                          "species is ever seen in training there; train species on a stratified config (e.g. "
                          "inception_342) or choose a higher --label_rank")
