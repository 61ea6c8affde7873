"""TensorFlow Datasets builder for the EOL Rare Species images.

Importing this package registers the `rare_species` dataset (`tfds build rare_species --imports=tfds_rarespecies`,
`tfds.load("rare_species")`).
"""

import multiprocessing

# The builder's decoding workers (spawned processes) need only Pillow: skipping the TFDS import there makes
# each worker start in a fraction of a second instead of importing TensorFlow.
if multiprocessing.parent_process() is None:
    from tfds_rarespecies import errors

    with errors.one_line_under_tfds_build():  # Ctrl-C while `tfds build --imports=...` imports the builder
        from tfds_rarespecies.rare_species.rare_species_dataset_builder import Builder, RareSpeciesConfig

    __all__ = ["Builder", "RareSpeciesConfig"]
