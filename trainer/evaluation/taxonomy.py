"""The taxonomy as the evaluation reads it: the shipped tree (tfds_rarespecies.labels, the label ids every build
and model share) for each label's ancestors and phylum, and the built split's own ranks per example for the
few-shot species.

Each rank is a ClassLabel feature of every example (-1 for a row outside the taxonomy); only those and the file
name are parsed, never the image.
"""

import numpy as np
import pandas as pd
import tensorflow_datasets as tfds

import pipelines
from pipelines import reading
from tfds_rarespecies import labels

RANKS = labels.RANKS
ALL_SPLITS = "train+validation+test"


def phylum_of(rank: str) -> dict[str, str]:
    """Each name of the rank -> its phylum (a phylum is its own), as the reports and predict group them."""
    if rank == "phylum":
        return {name: name for name in labels.names(rank)}
    return labels.ancestors(rank)["phylum"].to_dict()


def split_taxonomy(cfg: pipelines.InputConfig, split: str = ALL_SPLITS) -> pd.DataFrame:
    """One row per example of the split, in stored order: file_name and the six ranks by name (empty where
    the build had no taxonomy for the row)."""
    builder = reading.load_builder(cfg)
    features = builder.info.features
    decoders = tfds.decode.PartialDecoding({"file_name": True, **{rank: True for rank in RANKS}})
    table = pd.DataFrame(list(builder.as_dataset(split=split, shuffle_files=False,
                                                 decoders=decoders).as_numpy_iterator()))
    return pd.DataFrame({"file_name": table["file_name"].str.decode("utf-8"),
                         **{rank: _names(table[rank], features[rank]) for rank in RANKS}})


def _names(values: pd.Series, feature: tfds.features.ClassLabel) -> list[str]:
    names = np.asarray([*feature.names, ""], dtype=object)
    return names[np.where(values.to_numpy() < 0, -1, values.to_numpy())].tolist()
