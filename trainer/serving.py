"""Exports a run for TF Serving: `python -m trainer.serving --model_dir=runs/incv3 [--export_dir=...]`.

The command's front door; the work is trainer/evaluation/serving.py's (which documents the endpoints).
"""

from trainer import cli

cli.quiet_native_logs()

from trainer.evaluation import serving  # noqa: E402  (after the log level is set: importing TensorFlow prints)

PROGRAM = "trainer.serving"


def main(settings: serving.ExportSettings) -> None:
    serving.export(settings)


if __name__ == "__main__":
    cli.run(PROGRAM, main, serving.ExportSettings)
