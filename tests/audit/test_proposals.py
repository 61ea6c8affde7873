"""trainer.auditing.proposals on crafted score tables: what proposes an image, what only flags it, the weak-head
rule, the cap and the ranking."""

import numpy as np
import pandas as pd

from tests.audit.conftest import duplicate_table
from trainer.auditing import proposals
from trainer.auditing import scores as audit_scores

STRONG = audit_scores.HeadQuality(accuracy=0.95, macro_f1=0.9, images=100)
WEAK = audit_scores.HeadQuality(accuracy=0.5, macro_f1=0.4, images=100)
NO_CAP = proposals.Thresholds(max_proposed_share=1.0)


def _scores(rows: int, **columns) -> pd.DataFrame:
    """`rows` unremarkable images (ids i000...), with the given columns (lists or values) overriding."""
    base = {"non_photo_score": 0.0, "outlier_z": 0.0, "label_issue_rank": 0, "given_family_probability": 0.9,
            "other_family_probability": 0.05, "duplicate_cluster": -1, "duplicate_kind": "", "leak": False,
            "label_conflict": False, "duplicate_of": ""}
    return pd.DataFrame({**base, **columns}, index=[f"i{i:03d}" for i in range(rows)])


def test_only_evidence_alone_or_agreeing_proposes():
    scores = _scores(
        7,
        non_photo_score=[0.0, 0.9, 0.0, 0.0, 0.0, 0.0, 0.0],
        outlier_z=[0.0, 0.0, 9.0, 0.0, 0.0, 4.0, 0.0],
        label_issue_rank=[0, 0, 0, 1, 2, 3, 4],
        given_family_probability=[0.9, 0.9, 0.9, 0.01, 0.3, 0.3, 0.01],
        other_family_probability=[0.05, 0.05, 0.05, 0.9, 0.4, 0.4, 0.3])
    decided = proposals.decide(scores, NO_CAP, STRONG)
    assert decided["reasons"].tolist() == ["", "non_photo", "outlier", "label_issue", "label_issue",
                                           "label_issue;outlier", "label_issue"]
    assert decided["exclusion_reasons"].tolist() == ["", "non_photo", "", "label_issue", "", "label_issue;outlier",
                                                     ""]
    assert decided["status"].tolist() == ["", "proposed", "review", "proposed", "review", "proposed", "review"]

    weak = proposals.decide(scores, NO_CAP, WEAK)
    assert weak["reasons"].equals(decided["reasons"])
    assert weak["exclusion_reasons"].tolist() == ["", "non_photo", "", "", "", "", ""]
    assert not proposals.label_issues_propose(audit_scores.HeadQuality(np.nan, np.nan, 0), NO_CAP)


def test_duplicates_propose_the_extra_copies_and_both_sides_of_a_conflict():
    table = duplicate_table()
    clusters = audit_scores.duplicate_clusters(table).set_index(table["rare_species_id"])
    scores = clusters.assign(non_photo_score=0.0, outlier_z=0.0, label_issue_rank=0, given_family_probability=1.0,
                             other_family_probability=0.0)
    decided = proposals.decide(scores, NO_CAP, WEAK)
    assert decided.at["b", "reasons"] == decided.at["b", "exclusion_reasons"] == "duplicate_leak"
    assert decided.at["a", "reasons"] == "duplicate_leak" and decided.at["a", "status"] == "review"
    assert decided.at["c", "exclusion_reasons"] == "" and decided.at["d", "exclusion_reasons"] == "duplicate"
    assert decided.at["e", "reasons"] == decided.at["f", "reasons"] == "label_conflict;duplicate"
    assert decided.at["e", "exclusion_reasons"] == decided.at["f", "exclusion_reasons"] == "label_conflict"
    assert decided.at["g", "reasons"] == "" and decided.at["g", "review_rank"] == 0
    # A conflict or a leak outranks an extra copy within one split.
    assert decided.loc[["e", "f", "b"], "review_rank"].max() < decided.at["d", "review_rank"]


def test_the_cap_keeps_the_strongest_evidence_and_reviews_the_rest():
    non_photo = [0.6, 1.0, 0.8, 0.0, 0.0, 0.0, 0.0, 0.7, 0.9] + [0.0] * 91
    issue = [0, 0, 0, 1, 2, 3, 0, 0, 0] + [0] * 91
    scores = _scores(100, non_photo_score=non_photo, label_issue_rank=issue,
                     given_family_probability=[0.9, 0.9, 0.9, 0.01, 0.02, 0.3] + [0.9] * 94,
                     other_family_probability=[0.05, 0.05, 0.05, 0.9, 0.8, 0.6] + [0.05] * 94)
    thresholds = proposals.Thresholds(max_proposed_share=0.04)
    decided = proposals.decide(scores, thresholds, STRONG)
    assert proposals.cap(thresholds, 100) == 4 and decided["excluded"].sum() == 4
    ranked = decided[decided["review_rank"] > 0].sort_values("review_rank")
    # Non-photos by score, then the label issues (the surest first), then the one for review only.
    assert ranked.index.tolist() == ["i001", "i008", "i002", "i007", "i000", "i003", "i004", "i005"]
    assert ranked["status"].tolist() == ["proposed"] * 4 + ["over_cap"] * 3 + ["review"]
    assert (decided.loc[ranked.index[4:], "exclusion_reasons"] == "").all()
    assert decided.at["i003", "evidence"] == "label_issue"
    assert proposals.decide(scores, proposals.Thresholds(max_proposed_share=0.0), STRONG)["excluded"].sum() == 0


def test_review_only_flags_rank_agreeing_detectors_first():
    scores = _scores(4, outlier_z=[5.0, 9.0, 4.0, 0.0], label_issue_rank=[0, 0, 1, 2],
                     given_family_probability=[0.9, 0.9, 0.4, 0.2], other_family_probability=0.3)
    decided = proposals.decide(scores, NO_CAP, WEAK)
    assert (decided["status"] == "review").all()
    assert decided.sort_values("review_rank").index.tolist() == ["i002", "i003", "i001", "i000"]
