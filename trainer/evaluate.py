"""Evaluates a finished run on any split: `python -m trainer.evaluate --model_dir=runs/incv3 --split=test`.

The command's front door; the work is trainer/evaluation/evaluate.py's (which documents the outputs).
"""

from trainer import cli

cli.quiet_native_logs()

import pipelines  # noqa: E402  (after the log level is set: importing TensorFlow prints)
from trainer.evaluation import evaluate  # noqa: E402

PROGRAM = "trainer.evaluate"


def main(config: evaluate.EvaluationConfig) -> None:
    evaluate.evaluate(config)


if __name__ == "__main__":
    cli.run(PROGRAM, main, evaluate.EvaluationConfig, errors=(pipelines.DatasetNotBuiltError,))
