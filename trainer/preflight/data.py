"""The dataset the run reads: built for the config's dataset config in --data_dir (else the `tfds build`
command that builds it), the splits the run names present in it, and its size."""

import pipelines
from pipelines import reading
from tfds_rarespecies import labels
from trainer.preflight.report import Result, fail, ok
from trainer.training import inputs
from trainer.training.config import Config

SPLIT_FLAGS = ("train_split", "validation_split", "test_split")


def check_dataset(config: Config) -> Result:
    info = inputs.dataset_info(config)  # a dataset not built: a ConfigError naming the tfds build command
    built = reading.load_builder(inputs.input_config(config)).info
    read = [flag for flag in SPLIT_FLAGS if flag != "test_split" or config.test_split]  # empty: no test read
    for flag in read:
        split = getattr(config, flag)
        try:
            built.splits[split]
        except (KeyError, ValueError) as error:
            return fail("dataset", f"--{flag}={split}: {info.full_name} has no such split ({error}): name one of "
                                   f"{', '.join(info.num_examples)}, or a TFDS split expression such as "
                                   "train+validation")
    counts = ", ".join(f"{name} {count}" for name, count in info.num_examples.items())
    return ok("dataset", f"{info.full_name} in {config.data_dir}: {counts} examples, {built.dataset_size}; the run "
                         f"reads {', '.join(getattr(config, flag) for flag in read)}")


def class_counts(config: Config) -> dict[str, int]:
    """Names per head rank: the built dataset's; before the dataset is built, the shipped lists (what every
    config builds with unless it reads its labels from the metadata), so the model checks still run."""
    try:
        names = pipelines.dataset_info(inputs.input_config(config)).names
    except pipelines.DatasetNotBuiltError:
        names = {rank: labels.names(rank) for rank in config.head_ranks}
    return {rank: len(names[rank]) for rank in config.head_ranks}
