"""From scores to decisions: why each image is flagged for review, which flagged images are proposed for
exclusion, and in which order a person should look at them.

The exclusion list is for precision: a researcher rebuilds the dataset from it, and every correct image on it
is a photo lost from families of 30. So an image is proposed only on evidence that holds on its own (a
non-photo score, the same bytes under two families, an extra copy of a picture) or on two detectors agreeing
(a cleanlab label issue that is also a family outlier, or whose head gives another family a high probability
and its own a very low one). Label issues count only when the out-of-fold head reads the families well enough
(HeadQuality against Thresholds.min_head_macro_f1): confident learning on a weak head flags its own mistakes.
At most Thresholds.max_proposed_share of the images are proposed, strongest evidence first; every other flag
stays in review.csv, ranked.
"""

import dataclasses

import numpy as np
import pandas as pd

from trainer.auditing import scores as audit_scores

# Order in which review.csv lists and names the reasons an image was flagged.
REASONS = ("non_photo", "not_animal", "label_conflict", "label_issue", "outlier", "duplicate_leak", "duplicate")
# Which evidence fills the exclusion list first when the cap binds: a label conflict or a leak corrupts the
# labels or the test score for sure; a non-photo teaches nothing about any family; an agreeing label issue is
# probably a wrong label; an extra copy within one split only counts one photo twice.
PROPOSAL_ORDER = ("label_conflict", "duplicate_leak", "non_photo", "not_animal", "label_issue", "outlier",
                  "duplicate")
# review.csv's status column.
PROPOSED, OVER_CAP, REVIEW = "proposed", "over_cap", "review"
_STATUS_ORDER = {PROPOSED: 0, OVER_CAP: 1, REVIEW: 2}


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """Where each score flags an image for review (review.csv), when the evidence proposes it for exclusion
    (exclusions.csv), and how many proposals at most.

    Attributes:
      non_photo: non_photo_score at or above which an image is flagged and proposed (the score is 1 for a
        flat fill or a text page, 0 for a textured colour photo; 0.5 is where either test is half met).
      outlier: robust z of the family kNN distance at or above which an image is flagged. 3.5 is the usual
        cut for modified z-scores (Iglewicz & Hoaglin): a normal sample exceeds it about once in 4,000. An
        outlier alone is never proposed (an unusual view of a real animal is an outlier too); it is the
        agreeing evidence that makes a label issue a proposal.
      label_issue: a label issue whose head gave its family at most this probability (10x the chance level
        of 1/202: the head finds the label implausible, not merely hard) and ...
      other_family: ... another family at least this probability is proposed, outlier or not.
      not_animal: zero-shot probability of "not an animal photo" at or above which an image is flagged and
        proposed (only with --zero_shot_model).
      min_head_macro_f1: out-of-fold macro-F1 of the head below which label issues are listed for review
        only. Below 0.7 the head misreads about a third of a typical family's images, so most images it
        "disagrees with" are its own mistakes (the 17% of issue 18), not wrong labels.
      max_proposed_share: most images proposed, as a share of all images (0.03: 48 of 1,616). Earlier
        projects removed about 3% by hand; the ranking (PROPOSAL_ORDER, then the strength of the evidence)
        decides which stay within it, the rest are listed for review as over_cap.
    """

    non_photo: float = 0.5
    outlier: float = 3.5
    label_issue: float = 0.05
    other_family: float = 0.5
    not_animal: float = 0.5
    min_head_macro_f1: float = 0.7
    max_proposed_share: float = 0.03


def label_issues_propose(quality: audit_scores.HeadQuality, thresholds: Thresholds) -> bool:
    """Whether the head reads the families well enough for its label issues to propose exclusions (a NaN
    quality, no head at all, does not)."""
    return bool(quality.macro_f1 >= thresholds.min_head_macro_f1)


def cap(thresholds: Thresholds, images: int) -> int:
    """How many of `images` may be proposed for exclusion at most."""
    return int(np.floor(thresholds.max_proposed_share * images + 1e-9))


def decide(scores: pd.DataFrame, thresholds: Thresholds, quality: audit_scores.HeadQuality) -> pd.DataFrame:
    """Per image (scores' index): reasons (flagged for review), evidence (what would propose it),
    exclusion_reasons (proposed, within the cap), excluded, status (proposed, over_cap, review or "" when not
    flagged) and review_rank (1 = look first, 0 = not flagged).

    scores: columns non_photo_score, outlier_z, label_issue_rank, given_family_probability,
    other_family_probability and those of scores.duplicate_clusters; not_animal_score when the zero-shot
    model ran (NaN scores never flag).
    """
    flagged, evidence = _masks(scores, thresholds, label_issues_propose(quality, thresholds))
    reasons, evidence = _join(flagged), _join(evidence)
    strength = _strengths(scores)
    candidates = _ranked(evidence, strength, PROPOSAL_ORDER, by_agreement=False)
    allowed = cap(thresholds, len(scores))
    proposed = candidates[:allowed]
    status = pd.Series("", index=scores.index, dtype=object)
    status[reasons != ""] = REVIEW
    status.loc[candidates[allowed:]] = OVER_CAP
    status.loc[proposed] = PROPOSED
    order = candidates.append(_ranked(reasons[status == REVIEW], strength, REASONS, by_agreement=True))
    review_rank = pd.Series(0, index=scores.index)
    review_rank.loc[order] = np.arange(1, len(order) + 1)
    return pd.DataFrame({"reasons": reasons, "evidence": evidence,
                         "exclusion_reasons": evidence.where(status == PROPOSED, ""),
                         "excluded": status == PROPOSED, "status": status, "review_rank": review_rank},
                        index=scores.index)


def _masks(scores: pd.DataFrame, thresholds: Thresholds, trust_labels: bool
           ) -> tuple[dict[str, pd.Series], dict[str, pd.Series]]:
    """Per reason: which images it flags, and which it proposes (evidence alone or agreeing)."""
    not_animal = scores["not_animal_score"] if "not_animal_score" in scores else pd.Series(np.nan, scores.index)
    in_cluster = scores["duplicate_cluster"] >= 0
    is_issue = scores["label_issue_rank"] > 0
    outlier = scores["outlier_z"] >= thresholds.outlier
    confidently_other = ((scores["given_family_probability"] <= thresholds.label_issue)
                         & (scores["other_family_probability"] >= thresholds.other_family))
    agreeing_issue = is_issue & (outlier | confidently_other) & trust_labels
    extra_copy = scores["duplicate_of"] != ""
    flagged = {
        "non_photo": scores["non_photo_score"] >= thresholds.non_photo,
        "not_animal": not_animal >= thresholds.not_animal,
        "label_conflict": scores["label_conflict"],
        "label_issue": is_issue,
        "outlier": outlier,
        "duplicate_leak": in_cluster & scores["leak"],
        "duplicate": in_cluster & ~scores["leak"],
    }
    evidence = {
        **flagged,
        "label_issue": agreeing_issue,
        "outlier": agreeing_issue & outlier,
        "duplicate_leak": scores["leak"] & extra_copy,
        "duplicate": ~scores["leak"] & extra_copy,
    }
    return flagged, evidence


def _strengths(scores: pd.DataFrame) -> pd.DataFrame:
    """Per reason, how strong each image's evidence is (larger = surer), to rank images of the same reason."""
    exact = (scores["duplicate_kind"] == "exact").astype(float)
    return pd.DataFrame({
        "non_photo": scores["non_photo_score"],
        "not_animal": scores["not_animal_score"] if "not_animal_score" in scores else 0.0,
        "label_conflict": 1.0,
        "label_issue": 1.0 - scores["given_family_probability"],
        "outlier": scores["outlier_z"],
        "duplicate_leak": exact,
        "duplicate": exact,
    }, index=scores.index).fillna(0.0)


def _ranked(reasons: pd.Series, strength: pd.DataFrame, order: tuple[str, ...], by_agreement: bool
            ) -> pd.Index:
    """The images with any reason, ranked by their leading reason (the first in `order`) and by how many
    reasons agree (first, when by_agreement: two weak flags on one image outrank one), then by the leading
    reason's strength; ties by index, so reruns agree."""
    reasons = reasons[reasons != ""]
    split = reasons.str.split(";")
    lead = split.map(lambda names: min(names, key=order.index))
    key = pd.DataFrame({"agreeing": -split.map(len), "lead": lead.map(order.index),
                        "strength": [-strength.at[image, name] for image, name in lead.items()],
                        "image": reasons.index.astype(str)}, index=reasons.index)
    columns = ["agreeing", "lead"] if by_agreement else ["lead", "agreeing"]
    return key.sort_values([*columns, "strength", "image"]).index


def _join(masks: dict[str, pd.Series]) -> pd.Series:
    """One ";"-joined string of reasons per image, in REASONS order; empty when none."""
    frame = pd.DataFrame({reason: masks[reason].fillna(False).astype(bool) for reason in REASONS})
    return frame.apply(lambda row: ";".join(reason for reason in REASONS if row[reason]), axis=1).astype(str)
