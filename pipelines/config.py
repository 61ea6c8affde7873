"""InputConfig: everything that shapes the input pipeline, as one frozen value the trainer fills in.

A plain dataclass (never absl FLAGS) so the trainer, the tuner and tests build pipelines from values, and a
cached feature set or a trial can be keyed by it.
"""

import dataclasses

from pipelines import augmentation, backbones, balancing
from tfds_rarespecies.labels import RANKS

# The real inception_342 training split decodes to ~5 GB (~9.6k images of 342 x ~500 px): cached by default.
DEFAULT_TRAIN_CACHE_BYTES = 8 << 30


@dataclasses.dataclass(frozen=True)
class InputConfig:
    """What to read, at which size, and how to augment and balance it.

    Attributes:
      data_dir: TFDS data_dir holding the built dataset (None = TFDS' default).
      dataset_config: builder config, e.g. "inception_342" (see the backbone table's `dataset_config`).
      backbone: a name from pipelines.backbones; picks the per-backbone input scaling.
      image_size: side of the square images the model gets.
      batch_size: per replica; the global batch is batch_size x replicas in sync.
      augment: "none", "light" or "recipe" (pipelines.augmentation).
      augment_strength: scales every augmentation magnitude (1.0 = as named).
      augment_on_device: True puts augmentation and scaling at the front of the model (model_front_layers);
        the datasets then yield float32 0..255 images.
      mixup_alpha, cutmix_alpha: Beta(alpha, alpha) of MixUp / CutMix (0 = off); either makes labels one-hot,
        in training and evaluation alike, so one loss serves both.
      sampling_temperature: class-balanced sampling, p_c proportional to n_c ** T (1 = natural, 0 = uniform).
      label_rank: the rank the model names (phylum, class, order, family, genus or species): sampling,
        oversampling, class weights and the labels of a one-head model are at that rank.
      heads: the ranks with a softmax of their own, label_rank among them (empty = label_rank alone); with more
        than one, labels are a dict {rank: ids}.
      oversample_labels: names at label_rank whose images appear 1 + oversample_extra_views times per epoch.
      class_weights: "none", "balanced", "sqrt" or "effective_number": training batches then carry sample
        weights (Keras' class_weight cannot reach distributed datasets or two-head labels).
      class_weight_beta: beta of the effective-number scheme.
      shuffle_buffer: example-level shuffle buffer (after the file-level shuffle).
      cache_eval: cache decoded evaluation images in memory when they fit (pipelines.datasets.EVAL_CACHE_BYTES).
      train_cache_bytes: keep the decoded stored training images in memory when a pipeline's share of them fits
        in this many bytes (0 = never): later epochs skip the JPEG decode; crops and augmentation stay per step.
      deterministic: reproducible element order (slower); random transforms are seeded from `seed` always.
      seed: seeds file order, shuffling, crops, augmentation and mixing.
      dataset_name: the TFDS name; tests point it at a stand-in.
    """

    data_dir: str | None
    dataset_config: str
    backbone: str
    image_size: int
    batch_size: int
    augment: str = "none"
    augment_strength: float = 1.0
    augment_on_device: bool = False
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    sampling_temperature: float = 1.0
    label_rank: str = "family"
    heads: tuple[str, ...] = ()
    oversample_labels: tuple[str, ...] = ()
    oversample_extra_views: int = 2
    class_weights: str = "none"
    class_weight_beta: float = 0.999
    shuffle_buffer: int = 2048
    cache_eval: bool = True
    train_cache_bytes: int = DEFAULT_TRAIN_CACHE_BYTES
    deterministic: bool = False
    seed: int = 0
    dataset_name: str = "rare_species"

    def __post_init__(self):
        backbone = backbones.get_backbone(self.backbone)
        if self.image_size < backbone.min_input_size:
            raise ValueError(f"image_size {self.image_size} is below {self.backbone}'s minimum "
                             f"{backbone.min_input_size}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        augmentation.check_name(self.augment)
        if self.class_weights != "none":
            balancing.check_scheme(self.class_weights)
        if not 0.0 <= self.sampling_temperature <= 1.0:
            raise ValueError(f"sampling_temperature must be in [0, 1], got {self.sampling_temperature}")
        if self.mixup_alpha < 0 or self.cutmix_alpha < 0:
            raise ValueError("mixup_alpha and cutmix_alpha must be >= 0")
        if self.train_cache_bytes < 0:
            raise ValueError(f"train_cache_bytes must be >= 0, got {self.train_cache_bytes}")
        if self.oversample_extra_views < 0:
            raise ValueError(f"oversample_extra_views must be >= 0, got {self.oversample_extra_views}")
        unknown = sorted(set((self.label_rank, *self.heads)) - set(RANKS))
        if unknown:
            raise ValueError(f"unknown rank {', '.join(unknown)}: ranks are {', '.join(RANKS)}")
        if self.heads and self.label_rank not in self.heads:
            raise ValueError(f"heads {', '.join(self.heads)} leave out label_rank {self.label_rank}")
        object.__setattr__(self, "oversample_labels", tuple(self.oversample_labels))
        object.__setattr__(self, "heads", tuple(sorted(set(self.heads), key=RANKS.index)))

    @classmethod
    def for_backbone(cls, backbone: str, data_dir: str | None, batch_size: int, **fields) -> "InputConfig":
        """The backbone's own input size and stored-size config, other fields as given."""
        row = backbones.get_backbone(backbone)
        fields.setdefault("image_size", row.input_size)
        fields.setdefault("dataset_config", row.dataset_config)
        return cls(data_dir=data_dir, backbone=backbone, batch_size=batch_size, **fields)

    @property
    def head_ranks(self) -> tuple[str, ...]:
        """The ranks with a softmax, root first."""
        return self.heads or (self.label_rank,)

    @property
    def labels_as_dict(self) -> bool:
        """True when a batch's labels are {rank: ids} (several heads), not one tensor."""
        return len(self.head_ranks) > 1

    @property
    def soft_labels(self) -> bool:
        """True when labels are one-hot float vectors (MixUp/CutMix) rather than int32 class ids."""
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0
