"""Everything after the dataset is built: train, evaluate, serve, tune, audit and check a run.

Each command is `python -m trainer.<command>` (main, evaluate, predict, export, tune, doctor, audit), a thin
front door over its room; README.md's table of rooms is the one list of the rooms and the way imports flow.
No module defines a flag when imported: each command's front door does, through trainer.cli.run.
"""
