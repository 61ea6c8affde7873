"""The one command-line module: frozen dataclasses become absl flags, argv becomes dataclass values, and every
user mistake ends in one line, `PROGRAM: error: what, where, what to do`, with exit status 2.

Each command (trainer.main, tune, evaluate, predict, serving, audit, doctor) declares its settings as a
frozen dataclass whose fields are made with `field(...)` (help, choices, bounds next to the default) and
starts with `cli.run(PROGRAM, main, SettingsClass, ...)`. Flags are defined only there, in the entry point:
importing a library module defines none. `parse` reads any argument list (a saved flagfile, a test's argv)
through a private FlagValues, so it never touches absl's global FLAGS either.

Numeric bounds are absl's own validators, so `--phase1_epochs=-1` fails while the flags are parsed.
"""

import contextlib
import dataclasses
import os
import re
import signal
import sys
import tempfile
from collections.abc import Callable, Sequence

from absl import app, flags, logging

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UserError(ValueError):
    """A mistake the user can fix (a flag, a file, a missing build); the message is the one line shown and
    `status` the exit status (a subclass may set another, e.g. predict's "nothing could be predicted")."""

    status = EXIT_USAGE


# TensorFlow's C++ start-up lines: absl's banner, INFO lines (oneDNN, cudart_stub, cpu_feature_guard) and the
# continuation of cpu_feature_guard's line.
_NATIVE_START_UP = re.compile(r"WARNING: All log messages before absl::InitializeLog\(\)|I\d{4} [\d:. ]+\d+ \S+:\d+\] "
                              r"|To enable the following instructions:")


def quiet_native_logs() -> None:
    """Imports TensorFlow without its C++ start-up lines, unless the user set TF_CPP_MIN_LOG_LEVEL (then every
    line shows, as TensorFlow prints it). Entry points call it first.

    TF_CPP_MIN_LOG_LEVEL=3 quiets what TensorFlow logs later, but not the lines printed while it is imported,
    before absl's logging is initialised (tensorflow/tensorflow#100442): those are dropped from file
    descriptor 2 during the import; anything else printed there (a warning, an import error) is passed on.
    """
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ or "tensorflow" in sys.modules:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    with native_lines_dropped(_NATIVE_START_UP):
        import tensorflow  # noqa: F401


@contextlib.contextmanager
def native_lines_dropped(pattern: re.Pattern):
    """File descriptor 2 captured while the block runs (native libraries write there, past sys.stderr); every
    line is passed on afterwards but those `pattern` matches."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if not pattern.match(line)))


def field(default, help_text: str, choices: Sequence[str] | None = None, lower: float | None = None,
          upper: float | None = None, flag_name: str | None = None):
    """A dataclass field that is also a flag: its help, its choices or its numeric bounds (inclusive).

    flag_name: the flag's name when it differs from the field's (e.g. the audit's --config)."""
    return dataclasses.field(default=default, metadata={
        "help": help_text, "choices": tuple(choices) if choices else None, "lower": lower, "upper": upper,
        "flag": flag_name})


def flag_name(item: dataclasses.Field) -> str:
    return item.metadata.get("flag") or item.name


def _flag_fields(settings_type) -> list[dataclasses.Field]:
    """The fields of a settings dataclass that are flags (made with `field`)."""
    return [item for item in dataclasses.fields(settings_type) if "help" in item.metadata]


def define_flags(flag_values: flags.FlagValues, *settings_types) -> None:
    """One flag per field of each settings dataclass, into flag_values."""
    for settings_type in settings_types:
        for item in _flag_fields(settings_type):
            meta, name = item.metadata, flag_name(item)
            if meta["choices"]:
                flags.DEFINE_enum(name, item.default, meta["choices"], meta["help"], flag_values=flag_values)
            elif item.type in (bool, "bool"):
                flags.DEFINE_bool(name, item.default, meta["help"], flag_values=flag_values)
            elif item.type in (int, "int"):
                flags.DEFINE_integer(name, item.default, meta["help"], lower_bound=meta["lower"],
                                     upper_bound=meta["upper"], flag_values=flag_values)
            elif item.type in (float, "float"):
                flags.DEFINE_float(name, item.default, meta["help"], lower_bound=meta["lower"],
                                   upper_bound=meta["upper"], flag_values=flag_values)
            elif item.type in (tuple[str, ...], "tuple[str, ...]"):
                flags.DEFINE_list(name, list(item.default), meta["help"], flag_values=flag_values)
            else:
                flags.DEFINE_string(name, item.default, meta["help"], flag_values=flag_values)


def from_flags(flag_values: flags.FlagValues, settings_type):
    """The settings dataclass filled from parsed flags."""
    values = {}
    for item in _flag_fields(settings_type):
        value = flag_values[flag_name(item)].value
        values[item.name] = tuple(value) if isinstance(value, list) else value
    return settings_type(**values)


def check_fields(settings, error: type[UserError] = UserError) -> None:
    """The choices and bounds the flags enforce, for settings built in code (tuner trials, tests, notebooks),
    which no flag parser saw; raises `error` naming the first flag out of range."""
    for item in _flag_fields(type(settings)):
        meta, value, name = item.metadata, getattr(settings, item.name), flag_name(item)
        if meta["choices"] and value not in meta["choices"]:
            raise error(f"--{name}={value}: choose one of {', '.join(meta['choices'])}")
        if meta["lower"] is not None and value < meta["lower"]:
            raise error(f"--{name}={value}: must be at least {meta['lower']}")
        if meta["upper"] is not None and value > meta["upper"]:
            raise error(f"--{name}={value}: must be at most {meta['upper']}")


def parse(argv: Sequence[str], *settings_types, program: str = "rare_species"):
    """Settings from arguments without the program name (e.g. ["--flagfile=runs/x/flags.txt"]), through a
    private FlagValues; one value per settings type, or the value alone for one type."""
    flag_values = flags.FlagValues()
    define_flags(flag_values, *settings_types)
    flag_values([program, *argv])
    parsed = tuple(from_flags(flag_values, settings_type) for settings_type in settings_types)
    return parsed[0] if len(parsed) == 1 else parsed


def flagfile_text(*settings) -> str:
    """A flagfile that reproduces the settings: every flag, defaults included, so a later change of a default
    cannot silently change a rerun."""
    lines = []
    for value in settings:
        for item in _flag_fields(type(value)):
            current, name = getattr(value, item.name), flag_name(item)
            if isinstance(current, bool):
                lines.append(f"--{'' if current else 'no'}{name}")
            elif isinstance(current, tuple):
                lines.append(f"--{name}={','.join(map(str, current))}")
            else:
                lines.append(f"--{name}={current}")
    return "\n".join(lines) + "\n"


def fail(program: str, message: str, status: int = EXIT_USAGE):
    """How every command reports a mistake: one line on stderr, then exit."""
    print(f"{program}: error: {' '.join(str(message).split())}", file=sys.stderr)
    sys.exit(status)


def run(program: str, main: Callable, *settings_types, positional: bool = False,
        errors: tuple[type[BaseException], ...] = (), interrupted: str = "") -> None:
    """The start of every command: define the flags, parse argv (a bad flag is one line), keep library logs
    quiet, call main(*settings[, positional arguments]) and turn UserError (and `errors`) into one line.

    main returns None or an exit status. positional: the command takes arguments after the flags (predict's
    files); otherwise any is refused. interrupted: the line Ctrl-C / SIGTERM prints (status 130), e.g. how to
    resume; empty keeps the default handling.
    """
    define_flags(flags.FLAGS, *settings_types)

    def parse_argv(argv: list[str]) -> list[str]:
        try:
            return flags.FLAGS(argv)
        except flags.Error as error:
            fail(program, str(error))

    def start(argv: list[str]):
        # TFDS logs one INFO line per dataset opened, which buries the progress bars: --verbosity shows them.
        if not flags.FLAGS["verbosity"].present:
            logging.set_verbosity(logging.WARNING)
            logging.get_absl_logger().addFilter(_drop_library_notes)
        if len(argv) > 1 and not positional:
            fail(program, f"unexpected arguments {' '.join(argv[1:])}: every setting is a --flag")
        settings = [from_flags(flags.FLAGS, settings_type) for settings_type in settings_types]
        if interrupted:
            signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            status = main(*settings, *([argv[1:]] if positional else []))
        except (UserError, *errors) as error:
            fail(program, str(error), getattr(error, "status", EXIT_USAGE))
        except KeyboardInterrupt:
            if not interrupted:
                raise
            print(f"{program}: {interrupted}", file=sys.stderr)
            sys.exit(EXIT_INTERRUPTED)
        sys.exit(status or 0)

    app.run(start, flags_parser=parse_argv)


# Warnings libraries log about their own code: TFDS' PartialDecoding (which pipelines read with) compares
# FeatureConnector.dtype, which TFDS itself deprecates, each time a split is opened.
_LIBRARY_NOTES = ("`FeatureConnector.dtype` is deprecated",)


def _drop_library_notes(record) -> bool:
    message = record.getMessage()
    return not any(note in message for note in _LIBRARY_NOTES)


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C."""


def _raise_interrupt(signum, frame):
    raise Terminated
