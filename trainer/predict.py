"""Names what each photo shows at the run's label rank (e.g. its family):
`python -m trainer.predict --model_dir=runs/incv3 photo.jpg photos/ ...`.

The command's front door; the work is trainer/serving/predict.py's (which documents inputs, outputs and
exit statuses).
"""

from trainer import cli

cli.quiet_native_logs()

from trainer.serving import predict  # noqa: E402  (after the log level is set: importing TensorFlow prints)


def main(settings: predict.PredictSettings, inputs: list[str]) -> None:
    predict.run(settings, inputs)


if __name__ == "__main__":
    cli.run(predict.PROGRAM, main, predict.PredictSettings, positional=True)
