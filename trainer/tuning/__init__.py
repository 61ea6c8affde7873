"""The tuner behind `python -m trainer.tune` (trainer/tune.py, the entry point), one concern per module:

    settings  the tuner's own flags (Settings) and the rules between them
    space     the search spaces: which Config fields a trial fixes and samples
    study     the base config, opening the study (its identity), sampler and pruner
    worker    one worker: draws trials until the budget is used, each one trainer.train.run
    launcher  worker processes (GPU pinning, CPU threads), progress, signals
    storage   journal and database storages, dead workers, retries, the trial budget
    outputs   trials.csv, the plots, best.flags and the printed summary

Importing any of them defines no flag: trainer/tune.py does, through trainer.cli.run.
"""
