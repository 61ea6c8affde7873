"""One audit, end to end: check the settings, open the built dataset, read every split once, embed, score, and
hand the scores to review.py for the files and the summary."""

import pathlib

import numpy as np
import pandas as pd
import tensorflow_datasets as tfds
import tqdm

import pipelines
from pipelines import reading
from tfds_rarespecies import splits
from trainer.auditing import embedders, proposals, review, settings
from trainer.auditing import scores as audit_scores
from trainer.auditing.settings import AuditConfig, AuditError
from trainer.training import run_dir


def run(config: AuditConfig, embedder=None) -> pd.DataFrame:
    """Audits the dataset, writes every output into config.out and prints the summary.

    embedder: anything with `name`, `add(image)` and `embeddings(table)` (embedders.ColourStats' interface),
    to audit with features of one's own; None = the one --embedder names.
    Returns every image's scores and reasons (one row per image, in split order), flagged or not.
    """
    settings.validate(config)
    run_dir.check_folder(pathlib.Path(config.out).expanduser(), "--out")
    builder = _load_builder(config)
    embedder = embedder or embedders.make(config)
    zero_shot = (embedders.ZeroShot(config.zero_shot_model, config.zero_shot_architecture, config.batch_size)
                 if config.zero_shot_model else None)
    table = _read_examples(builder, [reader for reader in (embedder, zero_shot) if reader is not None])
    not_animal = zero_shot.not_animal() if zero_shot else None
    scores, quality = _score(table, embedder.embeddings(table), not_animal, config)
    review.write(builder, scores, quality, config, embedder.name)
    return scores


def _load_builder(config: AuditConfig) -> tfds.core.DatasetBuilder:
    """The built dataset through the pipelines' reader, which reads it from its files, so a config built with
    custom fields (an earlier audit's exclusions) can be audited again."""
    cfg = embedders.input_config(config)
    try:
        return reading.load_builder(cfg)
    except pipelines.DatasetNotBuiltError as exc:
        raise AuditError(f"--data_dir={config.data_dir} --config={config.dataset_config}: {exc}") from None


def _split_names(builder: tfds.core.DatasetBuilder) -> list[str]:
    return [name for name in splits.SPLITS if name in builder.info.splits]


def _read_examples(builder: tfds.core.DatasetBuilder, readers: list) -> pd.DataFrame:
    """One pass over every split: identity, hashes and pixel statistics per image (a table), each image also
    handed to the readers (embedders with `add(image)`) in table order."""
    features = builder.info.features
    records = []
    total = sum(builder.info.splits[name].num_examples for name in _split_names(builder))
    with tqdm.tqdm(total=total, desc="Reading and measuring images", unit=" images",
                   disable=None) as progress:
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
                for reader in readers:
                    reader.add(image)
                progress.update()
    return pd.DataFrame.from_records(records)


def _score(table: pd.DataFrame, embeddings: np.ndarray, not_animal: np.ndarray | None,
           config: AuditConfig) -> tuple[pd.DataFrame, audit_scores.HeadQuality]:
    """Every score and decision per image, in table order, and how well the label-issue head read the
    families."""
    scores = table.copy()
    scores["non_photo_score"] = audit_scores.non_photo_score(table)
    scores["outlier_z"] = audit_scores.family_outlier_scores(embeddings, table["family"], config.neighbours)
    families, label_ids = np.unique(table["family"], return_inverse=True)
    print(f"Cross-validating the label-issue head ({config.folds} folds, {len(table)} embeddings of "
          f"{embeddings.shape[1]} numbers, {len(families)} families)", flush=True)
    probabilities = audit_scores.out_of_fold_probabilities(embeddings, label_ids, config.folds, config.seed)
    scored = ~np.isnan(probabilities).any(axis=1)
    scores["given_family_probability"] = probabilities[np.arange(len(label_ids)), label_ids]
    others = probabilities.copy()
    others[np.arange(len(label_ids)), label_ids] = -np.inf
    scores["other_family_probability"] = np.where(scored, others.max(axis=1), np.nan)
    scores["predicted_family"] = np.where(scored, families[np.nan_to_num(probabilities).argmax(axis=1)], "")
    scores["label_issue_rank"] = audit_scores.label_issue_ranks(label_ids, probabilities)
    if not_animal is not None:
        scores["not_animal_score"] = not_animal
    scores = scores.join(audit_scores.duplicate_clusters(table, config.near_duplicate_distance))
    quality = audit_scores.head_quality(label_ids, probabilities)
    return scores.join(proposals.decide(scores, config.thresholds, quality)), quality
