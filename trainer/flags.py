"""The command line: one absl flag per Config field, parsed once at the edge into a Config.

Importing this module defines the flags in absl's global FLAGS (what `python -m trainer.main` parses);
`parse` reads any argument list into a Config through a private FlagValues, which is how a saved flagfile is
read back and how the tuner builds a base config without touching global state.
"""

import pathlib
import sys

from absl import flags
from absl import logging

from trainer import config as config_lib

EXIT_USAGE = 2

_DEFINERS = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float,
             str: flags.DEFINE_string}


def define_flags(flag_values: flags.FlagValues) -> None:
    for field in config_lib.fields():
        help_text, choices = field.metadata["help"], field.metadata["choices"]
        if choices:
            flags.DEFINE_enum(field.name, field.default, choices, help_text, flag_values=flag_values)
        else:
            _DEFINERS[field.type](field.name, field.default, help_text, flag_values=flag_values)


def config_from_flags(flag_values: flags.FlagValues) -> config_lib.Config:
    return config_lib.Config(**{field.name: flag_values[field.name].value for field in config_lib.fields()})


def parse(argv: list[str]) -> config_lib.Config:
    """Config from command-line arguments without the program name, e.g. ["--flagfile=configs/demo.flags"]."""
    flag_values = flags.FlagValues()
    define_flags(flag_values)
    flag_values(["trainer", *argv])
    return config_from_flags(flag_values)


def flagfile_text(config: config_lib.Config) -> str:
    """A flagfile that reproduces config: every field, defaults included, so later default changes cannot
    silently change a rerun."""
    lines = []
    for field in config_lib.fields():
        value = getattr(config, field.name)
        if isinstance(value, bool):
            lines.append(f"--{'' if value else 'no'}{field.name}")
        else:
            lines.append(f"--{field.name}={value}")
    return "\n".join(lines) + "\n"


def write_flagfile(config: config_lib.Config, path: pathlib.Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(flagfile_text(config))


def fail(program: str, message: str) -> None:
    """How every command reports a mistake: one line on stderr, exit status 2."""
    print(f"{program}: error: {message}", file=sys.stderr)
    sys.exit(EXIT_USAGE)


def parse_argv(program: str, argv: list[str]) -> list[str]:
    """absl's global parser with its two-line complaint about a bad flag replaced by one line."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        fail(program, str(error))


def start_command(program: str, argv: list[str]) -> None:
    """The common start of a command's main: settings come only as --flags, and TFDS' INFO logs (one per
    dataset opened, burying the progress bars) stay quiet unless --verbosity asks for them."""
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
        fail(program, f"unexpected arguments {' '.join(argv[1:])}: every setting is a --flag")


define_flags(flags.FLAGS)
