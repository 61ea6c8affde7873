r"""Finds the images of a built rare_species dataset worth a second look, and proposes an exclusion list.

    python -m trainer.audit --data_dir=DATA --config=inception_342 --backbone=inceptionv3 --weights=imagenet \
        --out=audit/
    # look at audit/review.html, edit audit/exclusions.csv, then rebuild without those images (the audit
    # prints this command for the audited config):
    tfds build rare_species --imports=tfds_rarespecies --manual_dir=DOWNLOAD --data_dir=DATA \
        --config='{"name": "inception_342_audited", "short_side": 342, "exclusions": "audit/exclusions.csv"}'

Earlier projects found maps, text pages, specimen tables and people among the photos (about 3%) and removed
them by hand. Here one pass over every split measures pixel statistics and reads the builder's hashes, the
frozen-feature cache embeds every image once, and trainer.audit_scores turns both into four lists: non-photos,
family outliers, label issues (cleanlab on out-of-fold probabilities) and duplicate clusters (with the splits
they straddle). Written to --out: review.csv (every flagged image), exclusions.csv (the builder's format: the
images past the exclusion thresholds), contact_sheet.png and review.html with thumbs/.
"""

import dataclasses
import hashlib
import html
import importlib.util
import json
import math
import os
import pathlib

import keras
import matplotlib.figure
import numpy as np
import pandas as pd
import tensorflow_datasets as tfds
import tqdm
from absl import app, flags
from PIL import Image

import pipelines
import tfds_rarespecies
from pipelines import backbones
from tfds_rarespecies import catalog, splits
from trainer import audit_scores, models

EMBEDDERS = ("backbone", "color_stats")
REVIEW_CSV = "review.csv"
EXCLUSIONS_CSV = catalog.EXCLUSIONS_FILE
CONTACT_SHEET_PNG = "contact_sheet.png"
REVIEW_HTML = "review.html"
THUMBS_DIR = "thumbs"
FEATURES_DIR = "features"
THUMBNAIL_SIDE = 160
_ZERO_SHOT_ANIMAL_PROMPTS = ("a photo of an animal",)
_ZERO_SHOT_OTHER_PROMPTS = ("a map", "a page of printed text", "a table of museum specimens",
                            "a photo of a person", "a drawing or illustration", "a chart or diagram")


class AuditError(ValueError):
    """The audit cannot run as asked; the message is the one line shown to the user."""


@dataclasses.dataclass(frozen=True)
class AuditConfig:
    """Everything one audit needs; each field is the flag of the same name (`--config` = dataset_config).

    Attributes:
      data_dir: TFDS data_dir holding the built rare_species dataset.
      dataset_config: the builder config to audit (a stored size, e.g. inception_342).
      out: folder for review.csv, exclusions.csv, contact_sheet.png, review.html and thumbs/.
      embedder: "backbone" (a frozen network from pipelines/backbones.py) or "color_stats" (colour and
        gradient-orientation histograms: no network, for CPU-only runs and tests).
      backbone, weights: the backbone and its weights (imagenet, none or a weights file) for "backbone".
      batch_size: images per backbone batch.
      neighbours: k of the family kNN distance.
      folds: cross-validation folds of the label-issue head.
      near_duplicate_distance: perceptual-hash bits under which two images of a family are copies.
      thresholds: when a score flags an image for review and when it proposes it for exclusion.
      zero_shot_model: path of a local open_clip checkpoint (e.g. BioCLIP) for a zero-shot "is this an
        animal photo" score; empty = off.
      zero_shot_architecture: the open_clip architecture of that checkpoint (BioCLIP: ViT-B-16).
      contact_sheet_images: how many flagged images the contact sheet shows (exclusions first).
      seed: seed of the cross-validation folds.
    """

    data_dir: str
    dataset_config: str
    out: str
    embedder: str = "backbone"
    backbone: str = "inceptionv3"
    weights: str = "imagenet"
    batch_size: int = 32
    neighbours: int = 5
    folds: int = 5
    near_duplicate_distance: int = splits.NEAR_DUPLICATE_MAX_DISTANCE
    thresholds: audit_scores.Thresholds = audit_scores.Thresholds()
    zero_shot_model: str = ""
    zero_shot_architecture: str = "ViT-B-16"
    contact_sheet_images: int = 48
    seed: int = 0


def run(config: AuditConfig) -> pd.DataFrame:
    """Audits the dataset, writes every output into config.out and prints the summary.

    Returns every image's scores and reasons (one row per image, in split order), flagged or not.
    """
    _validate(config)
    builder = _load_builder(config)
    embedder = _embedder(config) if config.embedder == "backbone" else None
    zero_shot = _ZeroShot(config.zero_shot_model, config.zero_shot_architecture) if config.zero_shot_model else None
    table, colour_embeddings, not_animal = _read_examples(builder, config, zero_shot)
    if embedder is None:
        embeddings, embedder_name = colour_embeddings, "color_stats (colour + gradient-orientation histograms)"
    else:
        embeddings = _backbone_embeddings(config, embedder, table)
        embedder_name = f"{config.backbone} ({config.weights})"
    scores = _score(table, embeddings, not_animal, config)
    out = pathlib.Path(config.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    review = _review_table(scores)
    review.to_csv(out / REVIEW_CSV, index=False)
    _write_exclusions(review, out / EXCLUSIONS_CSV)
    _write_thumbnails(builder, review, out)
    _write_contact_sheet(review, out, config.contact_sheet_images, embedder_name)
    rebuild = _rebuild_command(config, out / EXCLUSIONS_CSV)
    _write_review_page(review, out / REVIEW_HTML, embedder_name, config, len(scores), rebuild)
    print(_summary(scores, config, embedder_name, out, rebuild))
    return scores


def _rebuild_command(config: AuditConfig, exclusions: pathlib.Path) -> str:
    """The `tfds build` that writes the audited config again without the excluded images, beside it as
    <config>_audited (TFDS refuses a custom config named like a shipped one)."""
    base = tfds_rarespecies.Builder.builder_configs.get(config.dataset_config)
    if base is None:
        return (f"build {config.dataset_config} again with its --config JSON plus "
                f"\"exclusions\": \"{exclusions.resolve()}\" and a new name")
    fields = {"name": f"{base.name}_audited", "short_side": base.short_side, "split_scheme": base.split_scheme,
              "exclusions": str(exclusions.resolve())}
    return (f"tfds build rare_species --imports=tfds_rarespecies --manual_dir=DOWNLOAD --data_dir={config.data_dir} "
            f"--config='{json.dumps(fields)}'")


def _validate(config: AuditConfig) -> None:
    if config.embedder not in EMBEDDERS:
        raise AuditError(f"--embedder={config.embedder}: choose one of {', '.join(EMBEDDERS)}")
    if config.embedder == "backbone":
        try:
            spec = backbones.get_backbone(config.backbone)
        except ValueError as exc:
            raise AuditError(f"--backbone: {exc}") from None
        if config.weights == "imagenet" and spec.application is None:
            raise AuditError(f"--weights=imagenet: {spec.name} has no pretrained weights; use --weights=none, a "
                             "weights file, or --embedder=color_stats")
        if config.weights not in ("imagenet", "none") and not pathlib.Path(config.weights).expanduser().is_file():
            raise AuditError(f"--weights={config.weights}: no such file; give imagenet, none or a .weights.h5 of "
                             f"{spec.name} without top")
    if config.zero_shot_model:
        if importlib.util.find_spec("open_clip") is None:
            raise AuditError("--zero_shot_model needs open_clip, which is not installed: pip install "
                             "open_clip_torch (the weights are read from the given path, never downloaded)")
        if not pathlib.Path(config.zero_shot_model).expanduser().exists():
            raise AuditError(f"--zero_shot_model={config.zero_shot_model}: no such file; give the path of a local "
                             "open_clip checkpoint (e.g. BioCLIP's open_clip_pytorch_model.bin)")
    if min(config.neighbours, config.batch_size, config.contact_sheet_images) < 1 or config.folds < 2:
        raise AuditError("--neighbours, --batch_size and --contact_sheet_images must be at least 1 and --folds "
                         "at least 2")


def _load_builder(config: AuditConfig) -> tfds.core.DatasetBuilder:
    """The built dataset, read from its files, so a config built with custom fields (an earlier audit's
    exclusions) can be audited again."""
    try:
        builder = tfds.builder("rare_species", config=config.dataset_config,
                               data_dir=os.path.expanduser(config.data_dir))
        prepared = builder.is_prepared()
    except (ValueError, tfds.core.registered.DatasetNotFoundError):
        prepared = False
    if not prepared:
        names = ", ".join(tfds_rarespecies.Builder.builder_configs)
        raise AuditError(f"--data_dir={config.data_dir}: rare_species/{config.dataset_config} is not built there; "
                         f"build it with `tfds build rare_species --imports=tfds_rarespecies "
                         f"--config={config.dataset_config} --data_dir={config.data_dir} --manual_dir=<download>` "
                         f"(configs: {names})")
    return builder


def _split_names(builder: tfds.core.DatasetBuilder) -> list[str]:
    return [name for name in splits.SPLITS if name in builder.info.splits]


def _read_examples(builder: tfds.core.DatasetBuilder, config: AuditConfig, zero_shot: "_ZeroShot | None"
                   ) -> tuple[pd.DataFrame, np.ndarray | None, np.ndarray | None]:
    """One pass over every split: identity, hashes and pixel statistics per image (a table), plus the colour
    embeddings (for --embedder=color_stats) and zero-shot scores (with --zero_shot_model) in table order."""
    features = builder.info.features
    records, colour_embeddings, pending, not_animal = [], [], [], []
    total = sum(builder.info.splits[name].num_examples for name in _split_names(builder))
    with tqdm.tqdm(total=total, desc="Reading and measuring images", unit=" images") as progress:
        for split in _split_names(builder):
            for example in tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)):
                image = example["image"]
                records.append({
                    "rare_species_id": example["rare_species_id"].decode(),
                    "file_name": example["file_name"].decode(),
                    "family": features["family"].int2str(example["family"]),
                    "phylum": features["phylum"].int2str(example["phylum"]),
                    "split": split,
                    "content_sha256": example["content_sha256"].decode(),
                    "phash": example["phash"].decode(),
                    **audit_scores.image_statistics(image),
                })
                if config.embedder == "color_stats":
                    colour_embeddings.append(audit_scores.colour_embedding(image))
                if zero_shot is not None:
                    pending.append(image)
                    if len(pending) == config.batch_size:
                        not_animal.extend(zero_shot.not_animal(pending))
                        pending.clear()
                progress.update()
    if zero_shot is not None and pending:
        not_animal.extend(zero_shot.not_animal(pending))
    return (pd.DataFrame.from_records(records), np.stack(colour_embeddings) if colour_embeddings else None,
            np.asarray(not_animal) if zero_shot is not None else None)


def _input_config(config: AuditConfig) -> pipelines.InputConfig:
    """Evaluation input for the backbone at its own input size, read from the audited dataset config."""
    return pipelines.InputConfig.for_backbone(config.backbone, os.path.expanduser(config.data_dir),
                                              config.batch_size, dataset_config=config.dataset_config)


def _embedder(config: AuditConfig) -> keras.Model:
    """The frozen backbone with global average pooling (what the feature cache runs), built before any image
    is read so unusable weights fail at once."""
    spec = backbones.get_backbone(config.backbone)
    # Random initial weights are only reproducible, and so only cacheable, under a fixed seed.
    keras.utils.set_random_seed(config.seed)
    try:
        backbone = models.build_backbone(spec, _input_config(config).image_size, os.path.expanduser(config.weights))
    except Exception as exc:  # Keras raises a bare Exception when it cannot download the ImageNet weights.
        raise AuditError(f"--weights={config.weights}: cannot load {spec.name} weights "
                         f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); give a local "
                         ".weights.h5 of the backbone without top, none, or --embedder=color_stats") from None
    return keras.Sequential([backbone, keras.layers.GlobalAveragePooling2D()], name=f"{spec.name}_embedder")


def _backbone_embeddings(config: AuditConfig, embedder: keras.Model, table: pd.DataFrame) -> np.ndarray:
    """Pooled embeddings of every image in table order, from the pipelines' frozen-feature cache (out/features/:
    a rerun with other thresholds embeds nothing again)."""
    cache_dir = pathlib.Path(config.out).expanduser() / FEATURES_DIR
    rows = {name: i for i, name in enumerate(table["file_name"])}
    embeddings = np.zeros((len(table), embedder.output_shape[-1]), dtype=np.float32)
    for split in table["split"].unique():
        features = pipelines.cached_features(embedder, _weights_id(config), _input_config(config), split, cache_dir)
        embeddings[[rows[name] for name in features.file_names]] = features.embeddings
    return embeddings


def _weights_id(config: AuditConfig) -> str:
    """What the backbone's weights are, for the feature cache key: a file by its content, none by its seed."""
    if config.weights == "none":
        return f"none-seed{config.seed}"
    if config.weights == "imagenet":
        return "imagenet"
    data = pathlib.Path(config.weights).expanduser().read_bytes()
    return f"{pathlib.Path(config.weights).name}-sha256-{hashlib.sha256(data).hexdigest()[:16]}"


def _score(table: pd.DataFrame, embeddings: np.ndarray, not_animal: np.ndarray | None,
           config: AuditConfig) -> pd.DataFrame:
    """Every score and reason per image, in table order."""
    scores = table.copy()
    scores["non_photo_score"] = audit_scores.non_photo_score(table)
    scores["outlier_z"] = audit_scores.family_outlier_scores(embeddings, table["family"], config.neighbours)
    families, label_ids = np.unique(table["family"], return_inverse=True)
    print(f"Cross-validating the label-issue head ({config.folds} folds, {len(table)} embeddings of "
          f"{embeddings.shape[1]} numbers, {len(families)} families)", flush=True)
    probabilities = audit_scores.out_of_fold_probabilities(embeddings, label_ids, config.folds, config.seed)
    scored = ~np.isnan(probabilities).any(axis=1)
    scores["given_family_probability"] = probabilities[np.arange(len(label_ids)), label_ids]
    scores["predicted_family"] = np.where(scored, families[np.nan_to_num(probabilities).argmax(axis=1)], "")
    scores["label_issue_rank"] = audit_scores.label_issue_ranks(label_ids, probabilities)
    if not_animal is not None:
        scores["not_animal_score"] = not_animal
    scores = scores.join(audit_scores.duplicate_clusters(table, config.near_duplicate_distance))
    scores["reasons"], scores["exclusion_reasons"] = audit_scores.flag_reasons(scores, config.thresholds)
    scores["excluded"] = scores["exclusion_reasons"] != ""
    return scores


def _review_table(scores: pd.DataFrame) -> pd.DataFrame:
    """The flagged images with their thumbnail paths: proposed exclusions first, then by first reason (REASONS
    order), copies of one picture together, larger outliers first."""
    review = scores[scores["reasons"] != ""]
    first_reason = review["reasons"].str.split(";").str[0].map(
        {reason: i for i, reason in enumerate(audit_scores.REASONS)})
    review = review.assign(thumbnail=[f"{THUMBS_DIR}/{name}" for name in review["file_name"]],
                           first_reason=first_reason)
    return review.sort_values(["excluded", "first_reason", "duplicate_cluster", "outlier_z"],
                              ascending=[False, True, True, False]).drop(columns="first_reason")


def _write_exclusions(review: pd.DataFrame, path: pathlib.Path) -> None:
    """The builder's exclusion format (catalog.EXCLUSION_COLUMNS), one row per proposed image."""
    excluded = review[review["excluded"]]
    pd.DataFrame({"rare_species_id": excluded["rare_species_id"], "reason": excluded["exclusion_reasons"]},
                 columns=list(catalog.EXCLUSION_COLUMNS)).to_csv(path, index=False)


def _write_thumbnails(builder: tfds.core.DatasetBuilder, review: pd.DataFrame, out: pathlib.Path) -> None:
    """A JPEG thumbnail per flagged image; records are read undecoded and only flagged images decoded."""
    (out / THUMBS_DIR).mkdir(exist_ok=True)
    wanted = dict(zip(review["file_name"], review["thumbnail"]))
    image_feature = builder.info.features["image"]
    with tqdm.tqdm(total=len(wanted), desc="Writing thumbnails", unit=" images") as progress:
        for split in sorted(set(review["split"])):
            dataset = builder.as_dataset(split=split, shuffle_files=False,
                                         decoders={"image": tfds.decode.SkipDecoding()})
            for example in dataset.map(lambda x: {"image": x["image"], "file_name": x["file_name"]}):
                name = example["file_name"].numpy().decode()
                if name in wanted:
                    thumbnail = Image.fromarray(image_feature.decode_example(example["image"]).numpy())
                    thumbnail.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
                    thumbnail.save(out / wanted[name], quality=90)
                    progress.update()


def _describe(row) -> list[str]:
    """One short phrase per reason the image was flagged, with the score behind it."""
    phrases = {
        "non_photo": lambda: f"non-photo {row.non_photo_score:.2f}",
        "not_animal": lambda: f"not an animal photo {getattr(row, 'not_animal_score', math.nan):.2f}",
        "label_conflict": lambda: f"same file under {row.cluster_families}",
        "label_issue": lambda: (f"label issue: p({row.family}) {row.given_family_probability:.2f}, "
                                f"looks like {row.predicted_family}"),
        "outlier": lambda: f"outlier z {row.outlier_z:.1f}",
        "duplicate_leak": lambda: f"LEAK across splits: {_duplicate_phrase(row)}",
        "duplicate": lambda: _duplicate_phrase(row),
    }
    return [phrases[reason]() for reason in row.reasons.split(";")]


def _duplicate_phrase(row) -> str:
    role = (f"copy of {row.duplicate_of}" if row.duplicate_of
            else "no copy kept" if row.label_conflict else "the copy kept")
    return f"{row.duplicate_kind} duplicate, cluster {row.duplicate_cluster} ({row.cluster_splits}): {role}"


def _write_contact_sheet(review: pd.DataFrame, out: pathlib.Path, limit: int, embedder_name: str) -> None:
    """A grid of the first `limit` flagged thumbnails, each captioned family, split, reasons and scores."""
    shown = review.head(limit)
    columns = min(6, max(1, len(shown)))
    rows = max(1, math.ceil(len(shown) / columns))
    figure = matplotlib.figure.Figure(figsize=(3.2 * columns, 3.6 * rows), dpi=100, layout="constrained")
    grid = figure.subplots(rows, columns, squeeze=False).ravel()
    for axes in grid:
        axes.axis("off")
    for axes, row in zip(grid, shown.itertuples()):
        with Image.open(out / row.thumbnail) as thumbnail:
            axes.imshow(np.asarray(thumbnail))
        caption = "\n".join([f"{row.family} ({row.split})", *_describe(row)])
        axes.set_title(caption, fontsize=7, color="tab:red" if row.excluded else "black")
    if shown.empty:
        grid[0].text(0.5, 0.5, "nothing flagged", ha="center", va="center", fontsize=14)
    figure.suptitle(f"audit: {len(shown)} of {len(review)} flagged images, red = proposed for exclusion "
                    f"(embedder: {embedder_name})")
    figure.savefig(out / CONTACT_SHEET_PNG)


def _write_review_page(review: pd.DataFrame, path: pathlib.Path, embedder_name: str, config: AuditConfig,
                       images: int, rebuild: str) -> None:
    """A static page: one table row per flagged image (thumbnail, identity, reasons, scores)."""
    thresholds = ", ".join(f"{name} {value}" for name, value in dataclasses.asdict(config.thresholds).items())
    rows = "\n".join(
        f"<tr class=\"{'excluded' if row.excluded else 'kept'}\">"
        f"<td><img src=\"{html.escape(row.thumbnail)}\" alt=\"{html.escape(row.file_name)}\"></td>"
        f"<td>{html.escape(row.rare_species_id)}<br><small>{html.escape(row.file_name)}</small></td>"
        f"<td><b>{html.escape(row.family)}</b><br>{html.escape(row.phylum)}</td><td>{html.escape(row.split)}</td>"
        f"<td>{'<br>'.join(html.escape(phrase) for phrase in _describe(row))}</td>"
        f"<td>{html.escape(row.exclusion_reasons) or 'keep'}</td></tr>"
        for row in review.itertuples())
    title = f"rare_species/{html.escape(config.dataset_config)} audit"
    path.write_text(
        f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title><style>"
        "body{font-family:sans-serif;margin:1em} table{border-collapse:collapse} td,th{border:1px solid #ccc;"
        "padding:4px;vertical-align:top;font-size:13px} tr.excluded{background:#fde8e8} img{max-width:160px}"
        "</style></head>\n"
        f"<body><h1>{title}</h1><p>{len(review)} of {images} images flagged; "
        f"{int(review['excluded'].sum())} proposed for exclusion (red rows, listed in {EXCLUSIONS_CSV}). "
        f"Embedder: {html.escape(embedder_name)}. Thresholds: {html.escape(thresholds)}. Every score is in "
        f"{REVIEW_CSV}. Rebuild without the excluded images:</p>\n<pre>{html.escape(rebuild)}</pre>\n"
        "<table><tr><th>image</th><th>id / file</th><th>family</th><th>split</th><th>why flagged</th>"
        f"<th>exclusion</th></tr>\n{rows}\n</table></body></html>\n")


def _summary(scores: pd.DataFrame, config: AuditConfig, embedder_name: str, out: pathlib.Path,
             rebuild: str) -> str:
    """The screen a person reads: per reason how many images were flagged and how many are proposed for
    exclusion, the duplicate clusters and their leaks, where the files are and how to rebuild."""
    lines = [f"rare_species/{config.dataset_config} audit: {len(scores)} images, embedder {embedder_name}"]
    flagged = scores["reasons"].str.split(";").explode().value_counts()
    excluded = scores["exclusion_reasons"].str.split(";").explode().value_counts()
    for reason in audit_scores.REASONS:
        lines.append(f"  {reason:<15} flagged {flagged.get(reason, 0):>5}   "
                     f"proposed for exclusion {excluded.get(reason, 0):>5}")
    clusters = scores[scores["duplicate_cluster"] >= 0].groupby("duplicate_cluster")
    leaks = [cluster for cluster, members in clusters if members["leak"].iloc[0]]
    lines.append(f"  duplicate clusters: {clusters.ngroups} ({int((scores['duplicate_cluster'] >= 0).sum())} "
                 f"images), straddling splits (leaks): {len(leaks)}"
                 + (f" -- clusters {', '.join(map(str, leaks[:10]))}" if leaks else ""))
    lines.append(f"  total: {int((scores['reasons'] != '').sum())} flagged, {int(scores['excluded'].sum())} "
                 f"proposed for exclusion -> {out / REVIEW_HTML}, {out / EXCLUSIONS_CSV}")
    lines.append(f"  after review, rebuild without them: {rebuild}")
    return "\n".join(lines)


class _ZeroShot:
    """P(not an animal photo) from a local open_clip checkpoint (e.g. BioCLIP), by zero-shot prompts."""

    def __init__(self, path: str, architecture: str):
        import open_clip
        import torch

        self._torch = torch
        model, _, self._preprocess = open_clip.create_model_and_transforms(
            architecture, pretrained=os.path.expanduser(path))
        self._model = model.eval()
        prompts = open_clip.get_tokenizer(architecture)([*_ZERO_SHOT_ANIMAL_PROMPTS, *_ZERO_SHOT_OTHER_PROMPTS])
        with torch.no_grad():
            text = self._model.encode_text(prompts)
        self._text = text / text.norm(dim=-1, keepdim=True)

    def not_animal(self, images: list[np.ndarray]) -> np.ndarray:
        torch = self._torch
        batch = torch.stack([self._preprocess(Image.fromarray(image)) for image in images])
        with torch.no_grad():
            features = self._model.encode_image(batch)
            features = features / features.norm(dim=-1, keepdim=True)
            probabilities = (self._model.logit_scale.exp() * features @ self._text.T).softmax(dim=-1)
        return 1.0 - probabilities[:, :len(_ZERO_SHOT_ANIMAL_PROMPTS)].sum(dim=-1).numpy()


def define_flags(flag_values: flags.FlagValues) -> None:
    """The audit's flags, one per AuditConfig field (thresholds flattened)."""
    defaults = AuditConfig(data_dir="", dataset_config="", out="")
    thresholds = defaults.thresholds
    flags.DEFINE_string("data_dir", "~/tensorflow_datasets", "TFDS data_dir holding the built rare_species.",
                        flag_values=flag_values)
    flags.DEFINE_string("config", "inception_342", "rare_species builder config (stored size) to audit.",
                        flag_values=flag_values)
    flags.DEFINE_string("out", "audit", "Output folder: review.csv, exclusions.csv, contact_sheet.png, "
                        "review.html, thumbs/.", flag_values=flag_values)
    flags.DEFINE_enum("embedder", defaults.embedder, EMBEDDERS, "backbone: a frozen network (--backbone, "
                      "--weights); color_stats: colour and gradient-orientation histograms, no network.",
                      flag_values=flag_values)
    flags.DEFINE_enum("backbone", defaults.backbone, sorted(backbones.BACKBONES), "Backbone of "
                      "pipelines/backbones.py for --embedder=backbone.", flag_values=flag_values)
    flags.DEFINE_string("weights", defaults.weights, "imagenet, none (random init) or a .weights.h5 file of the "
                        "backbone without top.", flag_values=flag_values)
    flags.DEFINE_integer("batch_size", defaults.batch_size, "Images per backbone (and zero-shot) batch.",
                         flag_values=flag_values)
    flags.DEFINE_integer("neighbours", defaults.neighbours, "k of the family kNN distance behind outlier_z.",
                         flag_values=flag_values)
    flags.DEFINE_integer("folds", defaults.folds, "Stratified folds of the out-of-fold label-issue head.",
                         flag_values=flag_values)
    flags.DEFINE_integer("near_duplicate_distance", defaults.near_duplicate_distance, "Perceptual-hash bits (of "
                         "64) under which two images of a family are copies (the builder's default).",
                         flag_values=flag_values)
    flags.DEFINE_float("non_photo_threshold", thresholds.non_photo, "non_photo_score (0..1) at or above which "
                       "an image is flagged and proposed for exclusion.", flag_values=flag_values)
    flags.DEFINE_float("outlier_threshold", thresholds.outlier, "Robust z of the family kNN distance at or "
                       "above which an image is flagged for review.", flag_values=flag_values)
    flags.DEFINE_float("outlier_exclusion_threshold", thresholds.outlier_exclusion, "Robust z at or above which "
                       "an outlier is also proposed for exclusion.", flag_values=flag_values)
    flags.DEFINE_float("label_issue_threshold", thresholds.label_issue, "A cleanlab label issue is proposed for "
                       "exclusion when the out-of-fold head gave its family at most this probability.",
                       flag_values=flag_values)
    flags.DEFINE_float("not_animal_threshold", thresholds.not_animal, "Zero-shot P(not an animal photo) at or "
                       "above which an image is flagged and proposed for exclusion.", flag_values=flag_values)
    flags.DEFINE_string("zero_shot_model", "", "Path of a local open_clip checkpoint (e.g. BioCLIP) for a "
                        "zero-shot animal-photo score; needs open_clip installed; empty = off.",
                        flag_values=flag_values)
    flags.DEFINE_string("zero_shot_architecture", defaults.zero_shot_architecture, "open_clip architecture of "
                        "--zero_shot_model (BioCLIP: ViT-B-16).", flag_values=flag_values)
    flags.DEFINE_integer("contact_sheet_images", defaults.contact_sheet_images, "Flagged images on the contact "
                         "sheet (exclusions first).", flag_values=flag_values)
    flags.DEFINE_integer("seed", defaults.seed, "Seed of the cross-validation folds.", flag_values=flag_values)


def config_from_flags(flag_values: flags.FlagValues) -> AuditConfig:
    value = flag_values.flag_values_dict()
    return AuditConfig(
        data_dir=value["data_dir"], dataset_config=value["config"], out=value["out"], embedder=value["embedder"],
        backbone=value["backbone"], weights=value["weights"], batch_size=value["batch_size"],
        neighbours=value["neighbours"], folds=value["folds"],
        near_duplicate_distance=value["near_duplicate_distance"],
        thresholds=audit_scores.Thresholds(
            non_photo=value["non_photo_threshold"], outlier=value["outlier_threshold"],
            outlier_exclusion=value["outlier_exclusion_threshold"], label_issue=value["label_issue_threshold"],
            not_animal=value["not_animal_threshold"]),
        zero_shot_model=value["zero_shot_model"], zero_shot_architecture=value["zero_shot_architecture"],
        contact_sheet_images=value["contact_sheet_images"], seed=value["seed"])


def parse(argv: list[str]) -> AuditConfig:
    """AuditConfig from command-line arguments without the program name, through a private FlagValues."""
    flag_values = flags.FlagValues()
    define_flags(flag_values)
    flag_values(["audit", *argv])
    return config_from_flags(flag_values)


def main(argv: list[str]) -> None:
    del argv
    try:
        run(config_from_flags(flags.FLAGS))
    except AuditError as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    define_flags(flags.FLAGS)
    app.run(main)
