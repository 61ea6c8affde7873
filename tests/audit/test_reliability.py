"""The audit measures how far its label issues can be trusted, end to end on the planted dataset
(tests/audit/conftest.py) with two embedders of known strength: noise (the head cannot read any family) and
a one-hot of each image's true family (separable by construction, planted mislabels embedded as the family
they were drawn as)."""

import json

import numpy as np
import pandas as pd
import pytest

from tests.audit.conftest import FAMILIES, Planted, audit
from trainer.auditing import proposals, review

# The weak run's raised cap: every planted non-photo and extra copy (15 of 125) fits, agreeing flags would too.
WEAK_CAP = 0.15
# The strong run's raised cap: all 20 planted problems fit.
STRONG_CAP = 0.2
MIN_PRECISION = 0.8


class Noise:
    """A deliberately weak embedder: seeded Gaussian noise, nothing of the image."""

    name = "noise (test)"

    def add(self, image: np.ndarray) -> None:
        """Nothing: the embedding ignores the pixels."""

    def embeddings(self, table: pd.DataFrame) -> np.ndarray:
        return np.random.default_rng(0).normal(size=(len(table), 16)).astype(np.float32)


class TrueFamily:
    """A strong embedder: the one-hot of the family each image really shows, plus a little noise (so family
    members are not all at distance 0)."""

    name = "true family (test)"

    def __init__(self, planted: Planted):
        self._drawn_as = {image: FAMILIES[(FAMILIES.index(family) + 2) % len(FAMILIES)]
                          for family, image in zip(FAMILIES, planted.mislabelled)}

    def add(self, image: np.ndarray) -> None:
        """Nothing: the embedding is the family, not the pixels."""

    def embeddings(self, table: pd.DataFrame) -> np.ndarray:
        shown = [self._drawn_as.get(image, family) for image, family in zip(table["rare_species_id"],
                                                                            table["family"])]
        one_hot = np.eye(len(FAMILIES))[[FAMILIES.index(family) for family in shown]]
        return (one_hot + np.random.default_rng(0).normal(0, 0.05, one_hot.shape)).astype(np.float32)


def _standalone(planted: Planted) -> set[str]:
    """The planted images whose evidence holds on its own: the non-photos and the extra copies."""
    return planted.non_photos | {b for _, b in planted.duplicate_pairs}


@pytest.fixture(scope="module")
def weak(planted, tmp_path_factory):
    out = tmp_path_factory.mktemp("weak")
    scores, printed = audit(planted, out, f"--max_proposed_share={WEAK_CAP}", embedder=Noise())
    return scores, printed, out


def test_a_weak_head_is_measured_and_its_label_issues_are_review_only(planted, weak):
    scores, printed, out = weak
    head = json.loads((out / review.SUMMARY_JSON).read_text())["head"]
    assert head["macro_f1"] < proposals.Thresholds().min_head_macro_f1 and not head["label_issues_propose"]
    warnings = [line for line in printed.splitlines() if "WEAK HEAD" in line]
    assert len(warnings) == 1 and "label issues are for review only" in warnings[0]
    assert "--weights" in warnings[0] and f"macro-F1 {head['macro_f1']:.2f}" in printed
    assert "WEAK HEAD: label issues are for review only" in (out / review.REVIEW_HTML).read_text()
    issues = scores[scores["label_issue_rank"] > 0]
    assert len(issues) > 0 and (issues.loc[~issues.index.isin(_standalone(planted)), "status"] == "review").all()
    assert not scores["exclusion_reasons"].str.contains("label_issue").any()


def test_under_a_weak_head_proposals_are_the_standalone_evidence_within_the_cap(planted, weak):
    scores, _, out = weak
    proposed = set(scores.index[scores["excluded"]])
    assert len(proposed) <= proposals.cap(proposals.Thresholds(max_proposed_share=WEAK_CAP), len(scores))
    assert proposed == _standalone(planted)
    assert json.loads((out / review.SUMMARY_JSON).read_text())["proposed"] == len(proposed)


def test_the_default_cap_keeps_the_surest_and_says_how_many_more_are_flagged(planted, tmp_path):
    scores, printed = audit(planted, tmp_path, embedder=Noise())
    cap = proposals.cap(proposals.Thresholds(), len(scores))
    proposed = scores[scores["excluded"]]
    assert cap == 3 and len(proposed) == cap and set(proposed.index) <= planted.non_photos
    assert set(scores.index[scores["status"] == proposals.OVER_CAP]) == _standalone(planted) - set(proposed.index)
    flagged, over_cap = int((scores["reasons"] != "").sum()), len(_standalone(planted)) - cap
    assert f"{flagged} flagged, {cap} proposed for exclusion (cap {cap} = 3% of the images" in printed
    assert f"{flagged - cap} more flagged for review ({over_cap} of them over the cap)" in printed


def test_a_strong_head_proposes_the_mislabelled_and_spares_the_clean(planted, tmp_path):
    scores, printed = audit(planted, tmp_path, f"--max_proposed_share={STRONG_CAP}", embedder=TrueFamily(planted))
    summary = json.loads((tmp_path / review.SUMMARY_JSON).read_text())
    assert summary["head"]["label_issues_propose"] and "WEAK HEAD" not in printed
    proposed = set(scores.index[scores["excluded"]])
    assert set(planted.mislabelled) <= proposed
    assert all("label_issue" in scores.at[image, "exclusion_reasons"] for image in planted.mislabelled)
    assert len(proposed & planted.problems) / len(proposed) >= MIN_PRECISION
    clean = set(scores.index) - planted.problems - {a for a, _ in planted.duplicate_pairs}
    assert not proposed & clean
