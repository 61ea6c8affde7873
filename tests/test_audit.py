"""trainer.audit on a generated dataset with planted problems, built and rebuilt through the real builder, and
trainer.audit_scores on crafted arrays.

Five families x 25 generated images (each family its own colour and stripe direction); in every family one
image is overwritten by a text page, one by a flat colour fill, one by another family's pattern (a
mislabel), and one file is copied over another (a duplicate pair). The embedder is the from-scratch baseline
CNN with random weights: on these images (colour and stripes say the family) its pooled features separate the
families; a randomly initialised MobileNetV2 does not (its pooled features barely vary between images).
"""

import contextlib
import dataclasses
import html.parser
import importlib.util
import io
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import tensorflow_datasets as tfds
from PIL import Image, ImageDraw

from tests.conftest import build, tiny_rows
from tfds_rarespecies import catalog, replica, report
from trainer import audit, audit_scores

FAMILIES = ("acroporidae", "apidae", "bovidae", "cheloniidae", "unionidae")
PER_FAMILY = 25
# Allowed share of unplanted images proposed for exclusion / flagged for review.
CLEAN_EXCLUDED_RATE = 0.05
CLEAN_FLAGGED_RATE = 0.15


@dataclasses.dataclass(frozen=True)
class Planted:
    """The download, its build and the rare_species_ids of what was planted (the second of each duplicate pair
    is the copy)."""

    download: pathlib.Path
    data_dir: pathlib.Path
    text: list[str]
    flat: list[str]
    mislabelled: list[str]
    duplicate_pairs: list[tuple[str, str]]

    @property
    def non_photos(self) -> set[str]:
        return set(self.text) | set(self.flat)

    @property
    def problems(self) -> set[str]:
        return self.non_photos | set(self.mislabelled) | {b for _, b in self.duplicate_pairs}


def _text_page(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """A scanned page: near-white paper with lines of black text."""
    page = Image.new("RGB", (width, height), (250, 250, 246))
    draw = ImageDraw.Draw(page)
    for top in range(8, height - 12, 12):
        draw.text((6, top), "".join(rng.choice(list("abcdefghij klmnopqrstuvwxyz"), 40)), fill=(10, 10, 10))
    return page


@pytest.fixture(scope="module")
def planted(tmp_path_factory, real_metadata, real_taxonomy) -> Planted:
    root = tmp_path_factory.mktemp("audit")
    rows = tiny_rows(real_metadata, families=FAMILIES, per_family=PER_FAMILY)
    download = replica.write_replica(root / "download", rows, "course", real_taxonomy, min_side=130, max_side=200)
    rng = np.random.default_rng(7)
    text, flat, mislabelled, pairs = [], [], [], []
    for index, family in enumerate(FAMILIES):
        members = rows[rows["family"] == family]
        path = {row.rare_species_id: download / row.file_path for row in members.itertuples()}
        ids = list(path)
        _text_page(170, 150, rng).save(path[ids[1]], quality=85)
        Image.new("RGB", (160, 140), tuple(int(c) for c in rng.integers(0, 256, 3))).save(path[ids[3]], quality=85)
        other_family = FAMILIES[(index + 2) % len(FAMILIES)]
        replica.family_pattern(other_family, 150, 170, rng).save(path[ids[5]], quality=85)
        shutil.copyfile(path[ids[7]], path[ids[8]])
        text.append(ids[1])
        flat.append(ids[3])
        mislabelled.append(ids[5])
        pairs.append((ids[7], ids[8]))
    build(download, root / "data")
    return Planted(download, root / "data", text, flat, mislabelled, pairs)


def _audit(planted: Planted, out: pathlib.Path, *flags: str) -> tuple[pd.DataFrame, str]:
    """Runs the audit from command-line flags (parsed like `python -m trainer.audit`); returns scores and the
    printed summary."""
    config = audit.parse([f"--data_dir={planted.data_dir}", "--config=small_128", f"--out={out}", *flags])
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        scores = audit.run(config)
    return scores.set_index("rare_species_id"), printed.getvalue()


@pytest.fixture(scope="module")
def audited(planted, tmp_path_factory) -> tuple[pd.DataFrame, pathlib.Path, str]:
    out = tmp_path_factory.mktemp("audit_out")
    scores, printed = _audit(planted, out, "--backbone=baseline_cnn", "--weights=none")
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
    assert scores.loc[list(odd_ones), "outlier_z"].min() >= audit_scores.Thresholds().outlier_exclusion


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
    assert (untouched["non_photo_score"] < audit_scores.Thresholds().non_photo).all()


def test_outputs_review_csv_exclusions_page_and_contact_sheet(planted, audited):
    scores, out, printed = audited
    review = pd.read_csv(out / audit.REVIEW_CSV, dtype={"rare_species_id": str}, keep_default_na=False)
    assert set(review["rare_species_id"]) == set(scores.index[scores["reasons"] != ""])
    for column in ("rare_species_id", "file_name", "family", "split", "non_photo_score", "colourfulness",
                   "outlier_z", "given_family_probability", "label_issue_rank", "duplicate_cluster", "reasons",
                   "exclusion_reasons"):
        assert column in review.columns
    exclusions = catalog.read_exclusions(out / audit.EXCLUSIONS_CSV)
    assert set(exclusions) == set(scores.index[scores["excluded"]])
    assert planted.problems <= set(exclusions)
    assert all(exclusions[i] == scores.at[i, "exclusion_reasons"] for i in exclusions)

    page = _Page()
    page.feed((out / audit.REVIEW_HTML).read_text())
    page.close()
    assert page.balanced and len(page.images) == len(review)
    assert all((out / source).is_file() and not pathlib.Path(source).is_absolute() for source in page.images)
    with Image.open(out / audit.CONTACT_SHEET_PNG) as sheet:
        assert sheet.format == "PNG" and min(sheet.size) > 300
    for reason in audit_scores.REASONS:
        assert f"  {reason} " in printed
    assert "duplicate clusters: 5" in printed
    assert f'"exclusions": "{(out / audit.EXCLUSIONS_CSV).resolve()}"' in printed


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
    exclusions = catalog.read_exclusions(out / audit.EXCLUSIONS_CSV)
    builder = build(planted.download, tmp_path / "data", exclusions=str(out / audit.EXCLUSIONS_CSV))
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
    scores, printed = _audit(planted, tmp_path, "--embedder=color_stats")
    assert "color_stats" in printed
    assert planted.problems <= set(scores.index[scores["excluded"]])
    assert not (tmp_path / audit.FEATURES_DIR).exists()


def test_zero_shot_without_open_clip_is_one_clear_error(planted, tmp_path):
    if importlib.util.find_spec("open_clip") is not None:
        pytest.skip("open_clip is installed here")
    command = [sys.executable, "-m", "trainer.audit", f"--data_dir={planted.data_dir}", "--config=small_128",
               f"--out={tmp_path}", "--embedder=color_stats", f"--zero_shot_model={tmp_path / 'bioclip.bin'}"]
    finished = subprocess.run(command, capture_output=True, text=True, cwd=pathlib.Path(__file__).parents[1])
    assert finished.returncode != 0
    assert finished.stderr.strip().splitlines()[-1].startswith("error: --zero_shot_model needs open_clip")
    assert not (tmp_path / audit.REVIEW_CSV).exists()


def test_unbuilt_dataset_and_bad_weights_are_one_line_errors(tmp_path):
    with pytest.raises(audit.AuditError, match=r"^--data_dir=.*not built there; build it with `tfds build"):
        audit.run(audit.AuditConfig(data_dir=str(tmp_path), dataset_config="small_128", out=str(tmp_path),
                                    embedder="color_stats"))
    with pytest.raises(audit.AuditError, match=r"^--weights=imagenet: baseline_cnn has no pretrained weights"):
        audit.run(audit.AuditConfig(data_dir=str(tmp_path), dataset_config="small_128", out=str(tmp_path),
                                    backbone="baseline_cnn"))
    with pytest.raises(audit.AuditError, match=r"^--data_dir=.*: rare_species/huge is not built there.*small_128"):
        audit.run(audit.AuditConfig(data_dir=str(tmp_path), dataset_config="huge", out=str(tmp_path),
                                    embedder="color_stats"))


def test_unloadable_weights_fail_before_any_image_is_read(planted, tmp_path):
    weights = tmp_path / "baseline.weights.h5"
    weights.write_bytes(b"not an HDF5 file")
    config = audit.AuditConfig(data_dir=str(planted.data_dir), dataset_config="small_128", out=str(tmp_path / "out"),
                               backbone="baseline_cnn", weights=str(weights))
    with pytest.raises(audit.AuditError, match=r"^--weights=.*: cannot load baseline_cnn weights \(.*\); give"):
        audit.run(config)
    assert not (tmp_path / "out").exists()


# trainer.audit_scores on crafted inputs.

def test_non_photo_score_orders_fill_page_and_photo():
    rng = np.random.default_rng(0)
    images = {"fill": np.full((120, 140, 3), (200, 40, 40), np.uint8),
              "page": np.asarray(_text_page(140, 120, rng)),
              "photo": np.asarray(replica.family_pattern("bovidae", 140, 120, rng))}
    statistics = pd.DataFrame([audit_scores.image_statistics(image) for image in images.values()])
    score = dict(zip(images, audit_scores.non_photo_score(statistics)))
    assert score["fill"] == 1.0 and score["page"] == 1.0 and score["photo"] == 0.0
    assert statistics["colour_count"].tolist()[0] == 1


def test_family_outlier_scores_are_robust_z_within_family():
    rng = np.random.default_rng(0)
    tight = rng.normal(0, 0.01, (30, 8)) + np.eye(8)[0]
    loose = rng.normal(0, 0.3, (30, 8)) + np.eye(8)[1]
    tight[4] = np.eye(8)[2]
    families = ["tight"] * 30 + ["loose"] * 30 + ["pair"] * 2
    scores = audit_scores.family_outlier_scores(np.vstack([tight, loose, np.eye(8)[3:5]]), families)
    assert np.argmax(scores[:30]) == 4 and scores[4] > audit_scores.Thresholds().outlier_exclusion
    assert np.nanmax(scores[30:60]) < audit_scores.Thresholds().outlier_exclusion
    assert np.isnan(scores[60:]).all()


def test_out_of_fold_probabilities_handle_tiny_families():
    rng = np.random.default_rng(0)
    labels = np.array([0] * 20 + [1] * 20 + [2] * 2 + [3])
    embeddings = rng.normal(0, 1, (len(labels), 4)) + 3 * np.eye(4)[labels]
    probabilities = audit_scores.out_of_fold_probabilities(embeddings, labels, folds=5)
    assert np.isnan(probabilities[-1]).all()
    assert np.allclose(probabilities[:-1].sum(axis=1), 1.0) and (probabilities[:-1, 3] == 0).all()
    assert (probabilities[:40].argmax(axis=1) == labels[:40]).mean() > 0.9


def test_label_issue_ranks_put_the_flipped_labels_first():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 25)
    embeddings = rng.normal(0, 0.3, (100, 4)) + 5 * np.eye(4)[labels]
    given = labels.copy()
    given[[3, 30, 55]] = [1, 2, 3]
    ranks = audit_scores.label_issue_ranks(given, audit_scores.out_of_fold_probabilities(embeddings, given))
    assert set(np.flatnonzero(ranks)[np.argsort(ranks[ranks > 0])][:3]) == {3, 30, 55}


def _table(rows):
    return pd.DataFrame(rows, columns=["rare_species_id", "file_name", "family", "split", "content_sha256",
                                       "phash"])


def test_duplicate_clusters_report_leaks_and_label_conflicts():
    table = _table([
        ("a", "a.jpg", "bovidae", "train", "s1", "0000000000000000"),
        ("b", "b.jpg", "bovidae", "test", "s1", "0000000000000000"),          # exact copy of a, other split
        ("c", "c.jpg", "bovidae", "train", "s2", "ffff0000ffff0000"),
        ("d", "d.jpg", "bovidae", "train", "s3", "ffff0000ffff0001"),          # near copy of c, same split
        ("e", "e.jpg", "apidae", "validation", "s4", "0f0f0f0f0f0f0f0f"),
        ("f", "f.jpg", "cheloniidae", "validation", "s4", "0f0f0f0f0f0f0f0f"),  # same bytes, other family
        ("g", "g.jpg", "apidae", "train", "s5", "ffff0000ffff0000"),           # c's hash, other family
    ])
    clusters = audit_scores.duplicate_clusters(table).set_index(table["rare_species_id"])
    assert clusters.at["a", "duplicate_cluster"] == clusters.at["b", "duplicate_cluster"] >= 0
    assert clusters.loc[["a", "b"], "leak"].all() and clusters.at["a", "cluster_splits"] == "train+test"
    assert clusters.at["b", "duplicate_of"] == "a" and clusters.at["a", "duplicate_of"] == ""
    assert clusters.at["d", "duplicate_kind"] == "near" and not clusters.at["d", "leak"]
    assert clusters.at["d", "duplicate_of"] == "c"
    assert clusters.loc[["e", "f"], "label_conflict"].all()
    assert (clusters.loc[["e", "f"], "duplicate_of"] == "").all()
    assert clusters.at["g", "duplicate_cluster"] == -1
    scores = clusters.assign(non_photo_score=0.0, outlier_z=0.0, label_issue_rank=0, given_family_probability=1.0)
    flagged, excluded = audit_scores.flag_reasons(scores, audit_scores.Thresholds())
    assert flagged["b"] == excluded["b"] == "duplicate_leak" and flagged["a"] == "duplicate_leak"
    assert excluded["a"] == "" and excluded["c"] == "" and excluded["d"] == "duplicate"
    assert flagged["e"] == flagged["f"] == "label_conflict;duplicate"
    assert excluded["e"] == excluded["f"] == "label_conflict"
    assert flagged["g"] == ""


def test_flag_reasons_separate_review_from_exclusion():
    thresholds = audit_scores.Thresholds()
    scores = pd.DataFrame({
        "non_photo_score": [0.0, 0.9, 0.0, 0.0, 0.0],
        "outlier_z": [4.0, 0.0, 7.0, 0.0, np.nan],
        "label_issue_rank": [0, 0, 0, 1, 2],
        "given_family_probability": [0.9, 0.9, 0.9, 0.01, 0.3],
        "duplicate_cluster": -1, "leak": False, "label_conflict": False, "duplicate_of": ""})
    flagged, excluded = audit_scores.flag_reasons(scores, thresholds)
    assert flagged.tolist() == ["outlier", "non_photo", "outlier", "label_issue", "label_issue"]
    assert excluded.tolist() == ["", "non_photo", "outlier", "label_issue", ""]
