"""Everything after the dataset is built, in four rooms (each a package or group of modules with one concern):

  training    trainer/ itself: cli (the one flags/parse/fail module), config, main, train (`train.run(config)`,
              the one training path), inputs, models, objectives, schedules, callbacks, distribute, run_dir
  tuning      trainer/tuning/: Optuna studies whose trials call train.run        (python -m trainer.tune)
  evaluation  trainer/evaluation/: metrics (the one definition), reports, pages, evaluate, predict, serving
              (python -m trainer.evaluate | trainer.predict | trainer.serving)
  audit       trainer/audit/: non-photos, outliers, label issues, duplicates -> exclusions (python -m trainer.audit)

Imports flow one way: tuning -> training; audit -> evaluation (its pages) -> training -> pipelines ->
tfds_rarespecies. No module defines a flag when imported: each command's entry point does, through cli.run.
"""
