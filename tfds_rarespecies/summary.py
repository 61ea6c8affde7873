"""Prints what a built rare_species dataset holds: examples per split and phylum, and what was left out.

    python -m tfds_rarespecies.summary --data_dir=$HOME/tensorflow_datasets --config=inception_342

It reads the build back through TFDS (the examples counted are the ones `tfds.load` returns), so it doubles
as a check that the build is readable.
"""

import collections
import sys

import tensorflow_datasets as tfds
from absl import app, flags, logging

import tfds_rarespecies  # noqa: F401  (registers rare_species)

PROGRAM = "tfds_rarespecies.summary"


class NotBuiltError(FileNotFoundError):
    """The config is not built in data_dir; the message is the one line shown."""


def summarize(data_dir: str | None, config: str) -> str:
    builder = tfds.builder("rare_species", config=config, data_dir=data_dir)
    if not builder.is_prepared():
        raise NotBuiltError(f"rare_species/{config} is not built in {builder.data_dir}; run "
                         f"`tfds build rare_species --imports=tfds_rarespecies --config={config} "
                         f"--manual_dir=DOWNLOAD --data_dir={data_dir or '$HOME/tensorflow_datasets'}`")
    phylum_names = builder.info.features["phylum"].names
    lines = [f"rare_species/{config} in {builder.data_dir}"]
    for split in ("train", "validation", "test"):
        counts = collections.Counter()
        for phylum in tfds.as_numpy(builder.as_dataset(split=split).map(lambda x: x["phylum"])):
            counts[phylum_names[phylum]] += 1
        per_phylum = ", ".join(f"{name} {n}" for name, n in sorted(counts.items()))
        lines.append(f"  {split:<10} {sum(counts.values()):>6} examples  ({per_phylum})")
    report = builder.info.metadata.get("build_report", {})
    lines.append("  not written: " + (", ".join(f"{key} {n}" for key, n in report.get("reasons", {}).items())
                                      or "none"))
    lines.append(f"  files on disk that no metadata row names: {report.get('unnamed_files', 0)}")
    return "\n".join(lines)


def main(argv):
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # TFDS logs an INFO line for every split it opens
    if len(argv) > 1:
        sys.exit(f"{PROGRAM}: error: unexpected arguments {' '.join(argv[1:])}: every setting is a --flag")
    try:
        print(summarize(flags.FLAGS.data_dir, flags.FLAGS.config))
    except NotBuiltError as error:
        print(f"{PROGRAM}: error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    flags.DEFINE_string("data_dir", None, "TFDS data_dir the dataset was built into.")
    flags.DEFINE_string("config", "inception_342", "rare_species builder config.")
    app.run(main)
