"""trainer.auditing.scores on crafted arrays: each detector ranks what it was built to find."""

import numpy as np
import pandas as pd

from tests.audit.conftest import duplicate_table
from tests.audit.pictures import text_page
from tfds_rarespecies import replica
from trainer.auditing import proposals
from trainer.auditing import scores as audit_scores


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
    assert np.argmax(scores[:30]) == 4 and scores[4] > 2 * proposals.Thresholds().outlier
    assert np.nanmax(scores[30:60]) < 2 * proposals.Thresholds().outlier
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


def test_duplicate_clusters_report_leaks_and_label_conflicts():
    table = duplicate_table()
    clusters = audit_scores.duplicate_clusters(table).set_index(table["rare_species_id"])
    assert clusters.at["a", "duplicate_cluster"] == clusters.at["b", "duplicate_cluster"] >= 0
    assert clusters.loc[["a", "b"], "leak"].all() and clusters.at["a", "cluster_splits"] == "train+test"
    assert clusters.at["b", "duplicate_of"] == "a" and clusters.at["a", "duplicate_of"] == ""
    assert clusters.at["d", "duplicate_kind"] == "near" and not clusters.at["d", "leak"]
    assert clusters.at["d", "duplicate_of"] == "c"
    assert clusters.loc[["e", "f"], "label_conflict"].all()
    assert (clusters.loc[["e", "f"], "duplicate_of"] == "").all()
    assert clusters.at["g", "duplicate_cluster"] == -1


def test_head_quality_measures_the_out_of_fold_head():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
    probabilities = np.eye(3)[[0, 0, 0, 1, 1, 1, 1, 1, 2, 2]].astype(float)
    probabilities[-1] = np.nan
    quality = audit_scores.head_quality(labels, probabilities)
    assert quality.images == 9 and quality.accuracy == 8 / 9
    assert np.isclose(quality.macro_f1, np.mean([2 * 3 / (2 * 3 + 1), 2 * 4 / (2 * 4 + 1), 1.0]))
    assert np.isnan(audit_scores.head_quality(labels, np.full((10, 3), np.nan)).accuracy)
