"""What a person reads after an audit, all in --out: review.csv (every flagged image, ranked, with its scores
and status), exclusions.csv (the builder's format: the proposed images), summary.json (the counts and the
label-issue head's accuracy and macro-F1), thumbs/, contact_sheet.png, review.html, and the summary printed on
screen with the command that rebuilds the dataset without them.

Thumbnails, the contact sheet and the page skeleton are trainer/figures/pages.py's, shared with the
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
from trainer.auditing import embedders, proposals
from trainer.auditing import scores as audit_scores
from trainer.auditing.settings import AuditConfig
from trainer.figures import pages

REVIEW_CSV = "review.csv"
EXCLUSIONS_CSV = catalog.EXCLUSIONS_FILE
CONTACT_SHEET_PNG = "contact_sheet.png"
REVIEW_HTML = "review.html"
SUMMARY_JSON = "summary.json"
THUMBS_DIR = "thumbs"
_PAGE_STYLE = "tr.proposed{background:#fde8e8} tr.over_cap{background:#fdf3e0} img{max-width:160px}"
_SHEET_COLOURS = {proposals.PROPOSED: "tab:red", proposals.OVER_CAP: "tab:orange", proposals.REVIEW: "black"}


def write(builder: tfds.core.DatasetBuilder, scores: pd.DataFrame, quality: audit_scores.HeadQuality,
          config: AuditConfig, embedder_name: str) -> None:
    """Writes every output into config.out and prints the summary."""
    out = pathlib.Path(config.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    review = _review_table(scores)
    review.to_csv(out / REVIEW_CSV, index=False)
    _write_exclusions(review, out / EXCLUSIONS_CSV)
    counts = _counts(scores, quality, config)
    (out / SUMMARY_JSON).write_text(json.dumps({"embedder": embedder_name, **counts}, indent=2) + "\n")
    _write_thumbnails(builder, review, out)
    _write_contact_sheet(review, out, config.contact_sheet_images, embedder_name)
    rebuild = _rebuild_command(config, out / EXCLUSIONS_CSV)
    _write_review_page(review, out / REVIEW_HTML, embedder_name, config, counts, rebuild)
    print(_summary(scores, counts, config, embedder_name, out, rebuild))


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
    """The flagged images with their thumbnail paths in review_rank order: proposed exclusions, then those over
    the cap, then the flags for review only (proposals.decide ranks them)."""
    review = scores[scores["reasons"] != ""].sort_values("review_rank")
    return review.assign(thumbnail=[f"{THUMBS_DIR}/{name}" for name in review["file_name"]])


def _counts(scores: pd.DataFrame, quality: audit_scores.HeadQuality, config: AuditConfig) -> dict:
    """What summary.json holds and the summary prints: images, per reason flagged and proposed, the statuses,
    the cap, and the head's quality with whether its label issues may propose."""
    def per_reason(column: str) -> dict[str, int]:
        counted = scores[column].str.split(";").explode().value_counts()
        return {reason: int(counted.get(reason, 0)) for reason in proposals.REASONS}

    status = scores["status"].value_counts()
    thresholds = config.thresholds
    return {
        "images": len(scores),
        "flagged": int((scores["reasons"] != "").sum()),
        "proposed": int(status.get(proposals.PROPOSED, 0)),
        "over_cap": int(status.get(proposals.OVER_CAP, 0)),
        "review_only": int(status.get(proposals.REVIEW, 0)),
        "cap": proposals.cap(thresholds, len(scores)),
        "flagged_by_reason": per_reason("reasons"),
        "proposed_by_reason": per_reason("exclusion_reasons"),
        "head": {**dataclasses.asdict(quality), "min_macro_f1": thresholds.min_head_macro_f1,
                 "label_issues_propose": proposals.label_issues_propose(quality, thresholds)},
        "thresholds": dataclasses.asdict(thresholds),
    }


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
    with tqdm.tqdm(total=len(wanted), desc="Writing thumbnails", unit=" images", disable=None) as progress:
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
                                f"looks like {row.predicted_family} (best other family "
                                f"{row.other_family_probability:.2f})"),
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
        [_SHEET_COLOURS[row.status] for row in shown],
        out / CONTACT_SHEET_PNG,
        title=f"audit: {len(shown)} of {len(review)} flagged images, red = proposed for exclusion, orange = over "
              f"the cap (embedder: {embedder_name})",
        empty="nothing flagged")


def _read_thumbnail(path: pathlib.Path) -> Image.Image:
    """The thumbnail in memory, its file closed (a sheet holds dozens)."""
    with Image.open(path) as thumbnail:
        return thumbnail.copy()


def _status_phrase(row) -> str:
    """The review page's last column: what happens to the image, and on which evidence."""
    if row.status == proposals.PROPOSED:
        return f"proposed: {row.exclusion_reasons}"
    if row.status == proposals.OVER_CAP:
        return f"over the cap: {row.evidence}"
    return "review"


def _write_review_page(review: pd.DataFrame, path: pathlib.Path, embedder_name: str, config: AuditConfig,
                       counts: dict, rebuild: str) -> None:
    """A static page: one table row per flagged image in review_rank order (thumbnail, identity, reasons,
    scores, status)."""
    thresholds = ", ".join(f"{name} {value}" for name, value in counts["thresholds"].items())
    rows = "\n".join(
        f"<tr class=\"{row.status}\"><td>{row.review_rank}</td>"
        f"<td><img src=\"{html.escape(row.thumbnail)}\" alt=\"{html.escape(row.file_name)}\"></td>"
        f"<td>{html.escape(row.rare_species_id)}<br><small>{html.escape(row.file_name)}</small></td>"
        f"<td><b>{html.escape(row.family)}</b><br>{html.escape(row.phylum)}</td><td>{html.escape(row.split)}</td>"
        f"<td>{'<br>'.join(html.escape(phrase) for phrase in _describe(row))}</td>"
        f"<td>{html.escape(_status_phrase(row))}</td></tr>"
        for row in review.itertuples())
    notes = "".join(f"<p>{html.escape(line)}</p>\n" for line in _reliability_lines(counts, config))
    body = (f"{notes}<p>{counts['flagged']} of {counts['images']} images flagged; {counts['proposed']} proposed for "
            f"exclusion (red rows, listed in {EXCLUSIONS_CSV}), {counts['over_cap']} more with the same kind of "
            f"evidence over the cap of {counts['cap']} (orange), {counts['review_only']} for review only. "
            f"Embedder: {html.escape(embedder_name)}. Thresholds: {html.escape(thresholds)}. Every score is in "
            f"{REVIEW_CSV}. Rebuild without the proposed images:</p>\n"
            f"<pre>{html.escape(rebuild)}</pre>\n"
            "<table><tr><th>rank</th><th>image</th><th>id / file</th><th>family</th><th>split</th>"
            f"<th>why flagged</th><th>status</th></tr>\n{rows}\n</table>")
    path.write_text(pages.html_page(f"rare_species/{config.dataset_config} audit", body, _PAGE_STYLE))


def _reliability_lines(counts: dict, config: AuditConfig) -> list[str]:
    """The head's accuracy and macro-F1, and, below the floor, why label issues are for review only and what
    to embed with instead (one line)."""
    head = counts["head"]
    lines = [f"label-issue head (out of fold, {head['images']} images): accuracy {head['accuracy']:.2f}, "
             f"macro-F1 {head['macro_f1']:.2f} (floor {head['min_macro_f1']:.2f}, --min_head_macro_f1)"]
    if not head["label_issues_propose"]:
        lines.append(f"WEAK HEAD: label issues are for review only, because a head with macro-F1 "
                     f"{head['macro_f1']:.2f} < {head['min_macro_f1']:.2f} misreads many correct images and "
                     f"cleanlab flags its mistakes; {embedders.stronger_advice(config)}")
    return lines


def _summary(scores: pd.DataFrame, counts: dict, config: AuditConfig, embedder_name: str, out: pathlib.Path,
             rebuild: str) -> str:
    """The screen a person reads: the head's reliability, per reason how many images were flagged and how many
    are proposed for exclusion, the cap and how many more are left for review, the duplicate clusters and
    their leaks, where the files are and how to rebuild."""
    lines = [f"rare_species/{config.dataset_config} audit: {counts['images']} images, embedder {embedder_name}"]
    lines.extend(f"  {line}" for line in _reliability_lines(counts, config))
    for reason in proposals.REASONS:
        lines.append(f"  {reason:<15} flagged {counts['flagged_by_reason'][reason]:>5}   "
                     f"proposed for exclusion {counts['proposed_by_reason'][reason]:>5}")
    clusters = scores[scores["duplicate_cluster"] >= 0].groupby("duplicate_cluster")
    leaks = [cluster for cluster, members in clusters if members["leak"].iloc[0]]
    lines.append(f"  duplicate clusters: {clusters.ngroups} ({int((scores['duplicate_cluster'] >= 0).sum())} "
                 f"images), straddling splits (leaks): {len(leaks)}"
                 + (f" -- clusters {', '.join(map(str, leaks[:10]))}" if leaks else ""))
    lines.append(f"  total: {counts['flagged']} flagged, {counts['proposed']} proposed for exclusion (cap "
                 f"{counts['cap']} = {config.max_proposed_share:.0%} of the images, --max_proposed_share); "
                 f"{counts['flagged'] - counts['proposed']} more flagged for review ({counts['over_cap']} of them "
                 f"over the cap) -> {out / REVIEW_HTML}, {out / EXCLUSIONS_CSV}, {out / SUMMARY_JSON}")
    lines.append(f"  after review, rebuild without them: {rebuild}")
    return "\n".join(lines)
