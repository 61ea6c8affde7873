"""trainer.audit.scores on crafted arrays: each detector ranks what it was built to find."""

import numpy as np
import pandas as pd

from tests.audit.conftest import text_page
from tfds_rarespecies import replica
from trainer.audit import scores as audit_scores


def test_non_photo_score_orders_fill_page_and_photo():
    rng = np.random.default_rng(0)
    images = {"fill": np.full((120, 140, 3), (200, 40, 40), np.uint8),
              "page": np.asarray(text_page(140, 120, rng)),
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
