"""The evaluation room: what a trained run is worth and how it is used, at any label rank.

metrics (the one definition of every number, also used by trainer.train.run's final test), reports (a split's
files and summary), pages (plots, contact sheets, HTML),
rollup (tree-consistent answers and the roll-up rule), calibration (temperature scaling), rollup_file (the
run's calibration.json), few_shot and embeddings (the few-shot protocol), evaluate (predicts a split), predict
(photos on disk -> names at the label rank, rolled up), predictors (one interface over the keras and litert
backends), serving (the run's model in memory, the SavedModel), litert (LiteRT files and interpreter),
litert_export (conversion and parity), export (the export command). Commands: `python -m trainer.evaluate`,
`trainer.predict`, `trainer.serving`. Imports only downward: the training room, pipelines, the builder.
"""
