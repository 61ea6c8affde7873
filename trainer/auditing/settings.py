"""AuditConfig: what one audit is asked to do, each field a flag of `python -m trainer.audit` with its help,
choices and bounds next to the default, and `validate`, which turns every setting that cannot run into one
AuditError line before any image is read.

The flags check choices and bounds while they are parsed; `validate` checks them again for configs built in
code (tests, notebooks), then what no flag parser can know: whether the weights and the zero-shot model exist.
"""

import dataclasses
import importlib.util
import pathlib

from pipelines import backbones
from tfds_rarespecies import splits
from trainer import cli
from trainer.auditing import proposals
from trainer.cli import field

EMBEDDERS = ("backbone", "color_stats")
_DEFAULT = proposals.Thresholds()


class AuditError(cli.UserError):
    """The audit cannot run as asked; the message is the one line shown to the user."""


@dataclasses.dataclass(frozen=True)
class AuditConfig:
    """Everything one audit needs; `python -m trainer.audit --helpfull` documents each field (the flag of the
    same name; dataset_config is --config). The *_threshold fields, min_head_macro_f1 and max_proposed_share are
    proposals.Thresholds, flat so each is one flag: `thresholds` puts them together."""

    data_dir: str = field("~/tensorflow_datasets", "TFDS data_dir holding the built rare_species.",
                          group="data", path=True)
    dataset_config: str = field("inception_342", "rare_species builder config (stored size) to audit.",
                                flag_name="config", group="data")
    out: str = field("audit", "Output folder: review.csv, exclusions.csv, summary.json, contact_sheet.png, "
                              "review.html, thumbs/.", group="outputs", path=True)
    embedder: str = field("backbone", "backbone: a frozen network (--backbone, --weights); color_stats: colour and "
                                      "gradient-orientation histograms, no network (CPU-only runs, tests).", EMBEDDERS,
                          group="embedder")
    backbone: str = field("inceptionv3", "Backbone of pipelines/backbones.py for --embedder=backbone.",
                          tuple(sorted(backbones.BACKBONES)), group="embedder")
    weights: str = field("imagenet", "imagenet, none (random init) or a .weights.h5 file of the backbone without top.",
                         group="embedder", path=True)
    batch_size: int = field(32, "Images per backbone (and zero-shot) batch.", lower=1, group="embedder")
    neighbours: int = field(5, "k of the family kNN distance behind outlier_z.", lower=1, group="scores")
    folds: int = field(5, "Stratified folds of the out-of-fold label-issue head.", lower=2, group="scores")
    near_duplicate_distance: int = field(splits.NEAR_DUPLICATE_MAX_DISTANCE, "Perceptual-hash bits (of 64) under "
                                         "which two images of a family are copies (the builder's default).",
                                         lower=0, upper=64, group="scores")
    non_photo_threshold: float = field(_DEFAULT.non_photo, "non_photo_score (0..1) at or above which an image is "
                                       "flagged and proposed for exclusion: 1 = a flat fill or a text page, 0 = "
                                       "a textured colour photo.", lower=0, upper=1, group="thresholds")
    outlier_threshold: float = field(_DEFAULT.outlier, "Robust z of the family kNN distance at or above which an "
                                     "image is flagged for review (3.5: about 1 in 4,000 of a normal family). An "
                                     "outlier alone is never proposed; a label issue that is also an outlier is.",
                                     lower=0, group="thresholds")
    label_issue_threshold: float = field(_DEFAULT.label_issue, "A cleanlab label issue is also proposed for "
                                         "exclusion, outlier or not, when the out-of-fold head gave its family at "
                                         "most this probability and another family at least "
                                         "--other_family_threshold.", lower=0, upper=1, group="thresholds")
    other_family_threshold: float = field(_DEFAULT.other_family, "See --label_issue_threshold: how sure the head "
                                          "must be that the image belongs to another family.", lower=0, upper=1,
                                          group="thresholds")
    not_animal_threshold: float = field(_DEFAULT.not_animal, "Zero-shot P(not an animal photo) at or above which "
                                        "an image is flagged and proposed for exclusion.", lower=0, upper=1,
                                        group="thresholds")
    min_head_macro_f1: float = field(_DEFAULT.min_head_macro_f1, "Out-of-fold macro-F1 of the label-issue head "
                                     "(printed, and in summary.json) below which label issues are listed for "
                                     "review only: a head that misreads a third of a family's images flags "
                                     "mostly correct labels. 0 = always propose agreeing label issues.",
                                     lower=0, upper=1, group="thresholds")
    max_proposed_share: float = field(_DEFAULT.max_proposed_share, "Most images proposed for exclusion, as a "
                                      "share of all images (0.03: 3 in 100, 48 of a 1,616-image dataset); the "
                                      "strongest evidence fills it (label conflicts, leaks, non-photos, "
                                      "agreeing label issues, extra copies), the rest is listed for review as "
                                      "over_cap. Raise it after reviewing.", lower=0, upper=1, group="thresholds")
    zero_shot_model: str = field("", "Path of a local open_clip checkpoint (e.g. BioCLIP) for a zero-shot "
                                     "animal-photo score; needs open_clip installed; empty = off.",
                                 group="zero-shot", path=True)
    zero_shot_architecture: str = field("ViT-B-16", "open_clip architecture of --zero_shot_model (BioCLIP: "
                                                    "ViT-B-16).", group="zero-shot")
    contact_sheet_images: int = field(48, "Flagged images on the contact sheet (exclusions first).", lower=1,
                                      group="outputs")
    seed: int = field(0, "Seed of the cross-validation folds (and of --weights=none).", lower=0, group="scores")

    @property
    def thresholds(self) -> proposals.Thresholds:
        return proposals.Thresholds(
            non_photo=self.non_photo_threshold, outlier=self.outlier_threshold,
            label_issue=self.label_issue_threshold, other_family=self.other_family_threshold,
            not_animal=self.not_animal_threshold, min_head_macro_f1=self.min_head_macro_f1,
            max_proposed_share=self.max_proposed_share)


def validate(config: AuditConfig) -> None:
    """Raises AuditError on the first setting that cannot run, naming the flag to change."""
    cli.check_fields(config, AuditError)
    if config.embedder == "backbone":
        _check_weights(config)
    if config.zero_shot_model:
        _check_zero_shot(config)


def _check_weights(config: AuditConfig) -> None:
    problem = backbones.weights_problem(backbones.get_backbone(config.backbone), config.weights)
    if problem:
        raise AuditError(f"{problem} (or --embedder=color_stats, no network)")


def _check_zero_shot(config: AuditConfig) -> None:
    """The weights are read from the given path only, never downloaded."""
    if importlib.util.find_spec("open_clip") is None:
        raise AuditError("--zero_shot_model needs open_clip, which is not installed: pip install "
                         "open_clip_torch (the weights are read from the given path, never downloaded)")
    if not pathlib.Path(config.zero_shot_model).expanduser().exists():
        raise AuditError(f"--zero_shot_model={config.zero_shot_model}: no such file; give the path of a local "
                         "open_clip checkpoint (e.g. BioCLIP's open_clip_pytorch_model.bin)")
