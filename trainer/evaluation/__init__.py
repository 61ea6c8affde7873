"""The evaluation room: what a trained run is worth and how it is used.

metrics (the one definition of every number, also used by trainer.train.run's final test), reports (a split's
files and summary), pages (plots, contact sheets, HTML), evaluate (predicts a split through the saved model),
predict (photos on disk -> families), serving (the SavedModel export). Commands: `python -m trainer.evaluate`,
`trainer.predict`, `trainer.serving`. Imports only downward: the training room, pipelines, the builder.
"""
