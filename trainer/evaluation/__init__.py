"""The evaluation room: judges a split of a finished run and writes its report (`python -m trainer.evaluate`)."""
