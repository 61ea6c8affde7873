"""The rare_species dataset, in the folder layout `tfds build <folder>` and `tfds new` expect."""
