"""trainer.auditing.run end to end on the planted dataset (tests/audit/conftest.py), its exclusions rebuilt through
the real builder.

The embedder is the from-scratch baseline CNN with random weights: on these images (colour and stripes say the
family) its pooled features separate the families; a randomly initialised MobileNetV2 does not (its pooled
features barely vary between images).
"""

import html.parser
import json
import pathlib

import pandas as pd
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from tests.audit.conftest import FAMILIES, PER_FAMILY, audit
from tests.conftest import build
from tfds_rarespecies import catalog, report
from trainer.auditing import embedders, proposals, review

# Allowed share of unplanted images proposed for exclusion / flagged for review.
CLEAN_EXCLUDED_RATE = 0.05
CLEAN_FLAGGED_RATE = 0.15
# 20 of the 125 images are planted problems: the cap is raised to hold them all.
RAISED_CAP = "--max_proposed_share=0.2"
# Robust z the planted odd ones reach at least (the outlier flag is 3.5).
PLANTED_OUTLIER_Z = 6.0


@pytest.fixture(scope="module")
def audited(planted, tmp_path_factory) -> tuple[pd.DataFrame, pathlib.Path, str]:
    out = tmp_path_factory.mktemp("audit_out")
    scores, printed = audit(planted, out, "--backbone=baseline_cnn", "--weights=none", RAISED_CAP)
    return scores, out, printed


def _reasons(scores: pd.DataFrame, ids, column: str = "reasons") -> list[set[str]]:
    return [set(scores.at[i, column].split(";")) for i in ids]


def test_planted_non_photos_top_the_non_photo_score(planted, audited):
    scores, _, _ = audited
    top = scores["non_photo_score"].sort_values(ascending=False, kind="stable").index[:len(planted.non_photos)]
    assert set(top) == planted.non_photos
    assert all("non_photo" in reasons for reasons in _reasons(scores, planted.non_photos, "exclusion_reasons"))
    assert scores.loc[list(planted.flat), "colour_count"].max() <= 2
    assert scores.loc[list(planted.text), "colourfulness"].max() < 5


def test_planted_mislabels_are_cleanlab_label_issues(planted, audited):
    scores, _, _ = audited
    found = [i for i in planted.mislabelled if scores.at[i, "label_issue_rank"] > 0]
    assert len(found) >= 0.8 * len(planted.mislabelled)
    assert all("label_issue" in reasons for reasons in _reasons(scores, found, "exclusion_reasons"))
    for image in planted.mislabelled:
        drawn_as = FAMILIES[(FAMILIES.index(scores.at[image, "family"]) + 2) % len(FAMILIES)]
        assert scores.at[image, "predicted_family"] == drawn_as
    assert set(scores.index[scores["label_issue_rank"] > 0]) <= planted.problems


def test_planted_images_top_the_outlier_list(planted, audited):
    scores, _, _ = audited
    odd_ones = planted.non_photos | set(planted.mislabelled)
    top = scores["outlier_z"].sort_values(ascending=False).index[:len(odd_ones)]
    assert set(top) == odd_ones
    assert scores.loc[list(odd_ones), "outlier_z"].min() >= PLANTED_OUTLIER_Z


def test_planted_duplicates_are_clusters_of_two(planted, audited):
    scores, _, _ = audited
    for first, second in planted.duplicate_pairs:
        cluster = scores.at[first, "duplicate_cluster"]
        assert cluster >= 0
        assert set(scores.index[scores["duplicate_cluster"] == cluster]) == {first, second}
        assert scores.at[first, "duplicate_kind"] == "exact"
        assert not scores.at[first, "leak"]
        kept = first if scores.at[second, "duplicate_of"] == first else second
        copy = second if kept == first else first
        assert scores.at[copy, "duplicate_of"] == kept and scores.at[kept, "duplicate_of"] == ""
        assert "duplicate" in scores.at[copy, "exclusion_reasons"].split(";")
        assert "duplicate" not in scores.at[kept, "exclusion_reasons"].split(";")
    assert (scores["duplicate_cluster"] >= 0).sum() == 2 * len(planted.duplicate_pairs)


def test_clean_images_are_rarely_flagged(planted, audited):
    scores, _, _ = audited
    untouched = scores.drop(index=list(planted.problems | {a for a, _ in planted.duplicate_pairs}))
    assert untouched["excluded"].mean() <= CLEAN_EXCLUDED_RATE
    assert (untouched["reasons"] != "").mean() <= CLEAN_FLAGGED_RATE
    assert (untouched["non_photo_score"] < proposals.Thresholds().non_photo).all()


def test_outputs_review_csv_exclusions_page_and_contact_sheet(planted, audited):
    scores, out, printed = audited
    flagged = pd.read_csv(out / review.REVIEW_CSV, dtype={"rare_species_id": str}, keep_default_na=False)
    assert set(flagged["rare_species_id"]) == set(scores.index[scores["reasons"] != ""])
    for column in ("rare_species_id", "file_name", "family", "split", "non_photo_score", "colourfulness",
                   "outlier_z", "given_family_probability", "other_family_probability", "label_issue_rank",
                   "duplicate_cluster", "reasons", "evidence", "exclusion_reasons", "status", "review_rank"):
        assert column in flagged.columns
    assert flagged["review_rank"].tolist() == list(range(1, len(flagged) + 1))
    statuses = flagged["status"].tolist()
    assert statuses == sorted(statuses, key=[proposals.PROPOSED, proposals.OVER_CAP, proposals.REVIEW].index)
    exclusions = catalog.read_exclusions(out / review.EXCLUSIONS_CSV)
    assert set(exclusions) == set(scores.index[scores["excluded"]])
    assert planted.problems <= set(exclusions)
    assert all(exclusions[i] == scores.at[i, "exclusion_reasons"] for i in exclusions)

    page = _Page()
    page.feed((out / review.REVIEW_HTML).read_text())
    page.close()
    assert page.balanced and len(page.images) == len(flagged)
    assert all((out / source).is_file() and not pathlib.Path(source).is_absolute() for source in page.images)
    with Image.open(out / review.CONTACT_SHEET_PNG) as sheet:
        assert sheet.format == "PNG" and min(sheet.size) > 300
    for reason in proposals.REASONS:
        assert f"  {reason} " in printed
    assert "duplicate clusters: 5" in printed
    summary = json.loads((out / review.SUMMARY_JSON).read_text())
    assert summary["images"] == len(scores) and summary["proposed"] == len(exclusions)
    assert summary["flagged"] == len(flagged) == summary["proposed"] + summary["over_cap"] + summary["review_only"]
    # 15 of the 125 (non-photos, mislabels) need not show their given family: the rest is read.
    assert summary["head"]["accuracy"] > 0.85 and summary["head"]["label_issues_propose"]
    assert f"accuracy {summary['head']['accuracy']:.2f}, macro-F1 {summary['head']['macro_f1']:.2f}" in printed
    assert "WEAK HEAD" not in printed
    assert f'"exclusions": "{(out / review.EXCLUSIONS_CSV).resolve()}"' in printed


class _Page(html.parser.HTMLParser):
    """Collects <img> sources and checks that every opened element is closed."""

    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self):
        super().__init__()
        self.open, self.images, self.balanced = [], [], True

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        elif tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        if not self.open or self.open.pop() != tag:
            self.balanced = False

    def close(self):
        super().close()
        self.balanced = self.balanced and not self.open


def test_exclusions_round_trip_through_the_builder(planted, audited, tmp_path):
    _, out, _ = audited
    exclusions = catalog.read_exclusions(out / review.EXCLUSIONS_CSV)
    builder = build(planted.download, tmp_path / "data", exclusions=str(out / review.EXCLUSIONS_CSV))
    summary = builder.info.metadata["build_report"]
    assert summary["status"]["excluded"] == len(exclusions)
    assert summary["unmatched_exclusions"] == []
    rows = pd.read_csv(pathlib.Path(builder.data_dir) / report.CSV_NAME, dtype=str, keep_default_na=False)
    excluded = rows[rows["status"] == "excluded"]
    assert dict(zip(excluded["rare_species_id"], excluded["reason"])) == exclusions
    kept = set()
    for split in ("train", "validation", "test"):
        for example in tfds.as_numpy(builder.as_dataset(split=split)):
            kept.add(example["rare_species_id"].decode())
    assert not kept & set(exclusions)
    assert len(kept) == len(FAMILIES) * PER_FAMILY - len(exclusions)


def test_color_stats_embedder_finds_the_same_problems(planted, tmp_path):
    scores, printed = audit(planted, tmp_path, "--embedder=color_stats", RAISED_CAP)
    assert "color_stats" in printed
    assert planted.problems <= set(scores.index[scores["excluded"]])
    assert not (tmp_path / embedders.FEATURES_DIR).exists()
