"""The evaluation room: what a trained run is worth and how it is used.

metrics (the one definition of every number, also used by trainer.train.run's final test), reports (a split's
files and summary), pages (plots, contact sheets, HTML), evaluate (predicts a split), predict (photos on disk
-> families), predictors (one interface over the keras and litert backends), serving (the run's model in memory,
the SavedModel), litert (LiteRT files and interpreter), litert_export (conversion and parity), export (the
export command). Commands: `python -m trainer.evaluate`, `trainer.predict`, `trainer.serving`. Imports only
downward: the training room, pipelines, the builder.
"""
