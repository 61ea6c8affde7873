"""Fine-tunes a family classifier from the command line.

    python -m trainer.main --flagfile=configs/inceptionv3.flags --data_dir=~/tensorflow_datasets \
        --model_dir=runs/incv3

Flags -> Config -> trainer.train.run, which validates, writes model_dir/flags.txt and trains. Rerunning the
same command resumes an interrupted run. Any mistake in the flags or the data ends in one line on stderr and
exit status 2; `--helpfull` documents every flag.
"""

from absl import app
from absl import flags as absl_flags

from trainer import flags, train
from trainer.config import ConfigError

PROGRAM = "trainer.main"


def main(argv: list[str]) -> None:
    flags.start_command(PROGRAM, argv)
    try:
        train.run(flags.config_from_flags(absl_flags.FLAGS))
    except ConfigError as error:
        flags.fail(PROGRAM, str(error))


if __name__ == "__main__":
    app.run(main, flags_parser=lambda argv: flags.parse_argv(PROGRAM, argv))
