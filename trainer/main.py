"""Fine-tunes a family classifier from the command line.

    python -m trainer.main --flagfile=configs/inceptionv3.flags --data_dir=~/tensorflow_datasets \
        --model_dir=runs/incv3

Flags -> Config -> trainer.training.train.run, which validates, writes model_dir/flags.txt and trains. Rerunning the
same command resumes an interrupted run. Any mistake in the flags or the data ends in one line on stderr and
exit status 2; `--help` lists the flags by topic.
"""

from trainer import cli

cli.quiet_native_logs()

from trainer.training import train  # noqa: E402  (after the log level is set: importing TensorFlow prints)
from trainer.training.config import Config  # noqa: E402

PROGRAM = "trainer.main"


def main(config: Config) -> None:
    train.run(config)


if __name__ == "__main__":
    cli.run(PROGRAM, main, Config, interrupted="interrupted; rerun the same command to resume")
