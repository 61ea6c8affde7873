"""What a person reads after an audit, all in --out: review.csv (every flagged image and its scores),
exclusions.csv (the builder's format: the images past the exclusion thresholds), thumbs/, contact_sheet.png,
review.html, and the summary printed on screen with the command that rebuilds the dataset without them.

Thumbnails, the contact sheet and the page skeleton are trainer/evaluation/pages.py's, shared with the
evaluation reports; this module decides what is shown and in which order.
"""

import dataclasses
import html
import json
import math
import pathlib

import pandas as pd
import tensorflow_datasets as tfds
import tqdm
from PIL import Image

import tfds_rarespecies
from tfds_rarespecies import catalog
from trainer.audit import scores as audit_scores
from trainer.audit.settings import AuditConfig
from trainer.evaluation import pages

REVIEW_CSV = "review.csv"
EXCLUSIONS_CSV = catalog.EXCLUSIONS_FILE
CONTACT_SHEET_PNG = "contact_sheet.png"
REVIEW_HTML = "review.html"
THUMBS_DIR = "thumbs"
_PAGE_STYLE = "tr.excluded{background:#fde8e8} img{max-width:160px}"


def write(builder: tfds.core.DatasetBuilder, scores: pd.DataFrame, config: AuditConfig, embedder_name: str) -> None:
    """Writes every output into config.out and prints the summary."""
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
                    image = image_feature.decode_example(example["image"]).numpy()
                    pages.thumbnail(image).save(out / wanted[name], quality=90)
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
    """The first `limit` flagged thumbnails, each captioned family, split, reasons and scores."""
    shown = list(review.head(limit).itertuples())
    pages.contact_sheet(
        [_read_thumbnail(out / row.thumbnail) for row in shown],
        ["\n".join([f"{row.family} ({row.split})", *_describe(row)]) for row in shown],
        ["tab:red" if row.excluded else "black" for row in shown],
        out / CONTACT_SHEET_PNG,
        title=f"audit: {len(shown)} of {len(review)} flagged images, red = proposed for exclusion "
              f"(embedder: {embedder_name})",
        empty="nothing flagged")


def _read_thumbnail(path: pathlib.Path) -> Image.Image:
    """The thumbnail in memory, its file closed (a sheet holds dozens)."""
    with Image.open(path) as thumbnail:
        return thumbnail.copy()


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
    body = (f"<p>{len(review)} of {images} images flagged; {int(review['excluded'].sum())} proposed for exclusion "
            f"(red rows, listed in {EXCLUSIONS_CSV}). Embedder: {html.escape(embedder_name)}. Thresholds: "
            f"{html.escape(thresholds)}. Every score is in {REVIEW_CSV}. Rebuild without the excluded images:</p>\n"
            f"<pre>{html.escape(rebuild)}</pre>\n"
            "<table><tr><th>image</th><th>id / file</th><th>family</th><th>split</th><th>why flagged</th>"
            f"<th>exclusion</th></tr>\n{rows}\n</table>")
    path.write_text(pages.html_page(f"rare_species/{config.dataset_config} audit", body, _PAGE_STYLE))


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
