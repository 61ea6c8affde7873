"""The build report's split digests: what a run records to notice a dataset rebuilt with other splits."""

import pandas as pd

from tfds_rarespecies import report


def _written(splits: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame({"file_name": list(splits), "split": list(splits.values())})


def test_a_digest_names_a_splits_files_whatever_their_order():
    one = report.split_digests(_written({"a.jpg": "train", "b.jpg": "train", "c.jpg": "test"}))
    other = report.split_digests(_written({"c.jpg": "test", "b.jpg": "train", "a.jpg": "train"}))
    assert one == other and set(one) == {"train", "test"}


def test_moving_one_file_changes_both_splits_digests():
    before = report.split_digests(_written({"a.jpg": "train", "b.jpg": "train", "c.jpg": "test"}))
    after = report.split_digests(_written({"a.jpg": "train", "b.jpg": "test", "c.jpg": "test"}))
    assert before["train"] != after["train"] and before["test"] != after["test"]
