"""The serving room: a finished run in use. Loading it, predicting photos and splits, the SavedModel with its
in-graph roll-up, LiteRT export and runtime (`python -m trainer.predict`, `python -m trainer.export`)."""
