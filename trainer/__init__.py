"""Fine-tunes a family classifier: `python -m trainer.main --flagfile=configs/inceptionv3.flags ...`.

`trainer.train.run(config)` is the one training path; main, the tuner, benchmarks and tests all call it with a
`trainer.config.Config`.
"""
