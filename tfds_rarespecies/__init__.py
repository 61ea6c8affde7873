"""TensorFlow Datasets builder for the EOL Rare Species images.

Importing this package registers the `rare_species` dataset (`tfds build rare_species --imports=tfds_rarespecies`,
`tfds.load("rare_species")`).
"""

from tfds_rarespecies.rare_species.rare_species_dataset_builder import Builder, RareSpeciesConfig

__all__ = ["Builder", "RareSpeciesConfig"]
