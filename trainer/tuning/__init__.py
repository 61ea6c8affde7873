"""The tuning room: Optuna studies whose trials call trainer.training.train.run (`python -m trainer.tune`)."""
