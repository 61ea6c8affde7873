"""Fine-tunes a family classifier from the command line.

    python -m trainer.main --flagfile=configs/inceptionv3.flags --data_dir=~/tensorflow_datasets \
        --model_dir=runs/incv3

Flags -> Config -> trainer.train.run, which validates, writes model_dir/flags.txt and trains. Rerunning the
same command resumes an interrupted run. Any mistake in the flags or the data ends in one line on stderr and
exit status 2; `--helpfull` documents every flag.
"""

import sys

from absl import app
from absl import flags as absl_flags
from absl import logging

from trainer import flags, train
from trainer.config import ConfigError

EXIT_USAGE = 2


def _fail(message: str) -> None:
    print(f"trainer.main: error: {message}", file=sys.stderr)
    sys.exit(EXIT_USAGE)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's parser with its two-line complaint about a bad flag replaced by one line."""
    try:
        return absl_flags.FLAGS(argv)
    except absl_flags.Error as error:
        _fail(str(error))


def main(argv: list[str]) -> None:
    if not absl_flags.FLAGS["verbosity"].present:
        # TFDS logs every dataset it opens at INFO, burying the progress bars; --verbosity=0 shows them.
        logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
        _fail(f"unexpected arguments {' '.join(argv[1:])}: every setting is a --flag")
    try:
        train.run(flags.config_from_flags(absl_flags.FLAGS))
    except ConfigError as error:
        _fail(str(error))


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
