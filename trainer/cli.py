"""The one command-line module: frozen dataclasses become absl flags, argv becomes dataclass values, and every
user mistake ends in one line, `PROGRAM: error: what, where, what to do`, with exit status 2.

Each command (trainer.main, tune, evaluate, predict, serving, audit, doctor) declares its settings as a
frozen dataclass whose fields are made with `field(...)` (help, choices, bounds next to the default) and
starts with `cli.run(PROGRAM, main, SettingsClass, ...)`. Flags are defined only there, in the entry point:
importing a library module defines none. `parse` reads any argument list (a saved flagfile, a test's argv)
through a private FlagValues, so it never touches absl's global FLAGS either.

Numeric bounds are absl's own validators, so `--phase1_epochs=-1` fails while the flags are parsed.

`--help` prints the command's own flags grouped by topic (each field's `group`), with defaults and ranges, and
exits 0; absl's `--helpfull` lists every flag, the libraries' (absl, TensorFlow) too. A field marked `path`
has a leading `~` expanded where flags become settings (the shell does not expand it after `=`), so no module
needs its own expanduser for a flag's value.
"""

import contextlib
import dataclasses
import errno
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import textwrap
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
    Ctrl-C until `run` calls the command (imports, flag parsing: nothing written yet) ends in one line, status 130.
    """
    if _command().startswith("trainer."):  # a command starting, not a module a test or notebook imports
        signal.signal(signal.SIGINT, _interrupted_while_starting)
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
    with tempfile.TemporaryFile() as captured:
        try:
            with _descriptor_to(2, captured.fileno()):
                yield
        finally:
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if not pattern.match(line)))


@contextlib.contextmanager
def output_to(path):
    """Everything the block prints appended to the file at path: Python's stdout and stderr (Keras' progress,
    tracebacks) and file descriptors 1 and 2 (TensorFlow's native lines, child processes)."""
    sys.stdout.flush()
    sys.stderr.flush()
    with open(path, "a", buffering=1) as log, _descriptor_to(1, log.fileno()), _descriptor_to(2, log.fileno()), \
            contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        try:
            yield
        finally:
            log.flush()


@contextlib.contextmanager
def _descriptor_to(descriptor: int, target: int):
    """File descriptor `descriptor` writes to `target` while the block runs, then where it wrote before."""
    saved = os.dup(descriptor)
    os.dup2(target, descriptor)
    try:
        yield
    finally:
        os.dup2(saved, descriptor)
        os.close(saved)


def field(default, help_text: str, choices: Sequence[str] | None = None, lower: float | None = None,
          upper: float | None = None, flag_name: str | None = None, group: str = "", path: bool = False):
    """A dataclass field that is also a flag: its help, its choices or its numeric bounds (inclusive).

    flag_name: the flag's name when it differs from the field's (e.g. the audit's --config).
    group: the topic `--help` lists it under (e.g. data, model, outputs); every field names one.
    path: a file or folder (or a value such as imagenet or a database URL beside one): a leading ~ is expanded.
    """
    return dataclasses.field(default=default, metadata={
        "help": help_text, "choices": tuple(choices) if choices else None, "lower": lower, "upper": upper,
        "flag": flag_name, "group": group, "path": path})


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
                flags.register_validator(name, math.isfinite, "must be a finite number (not nan or inf)",
                                         flag_values=flag_values)
            elif item.type in (tuple[str, ...], "tuple[str, ...]"):
                flags.DEFINE_list(name, list(item.default), meta["help"], flag_values=flag_values)
            else:
                flags.DEFINE_string(name, item.default, meta["help"], flag_values=flag_values)


def from_flags(flag_values: flags.FlagValues, settings_type):
    """The settings dataclass filled from parsed flags."""
    values = {}
    for item in _flag_fields(settings_type):
        value = flag_values[flag_name(item)].value
        if item.metadata.get("path") and isinstance(value, str):
            value = os.path.expanduser(value)
        values[item.name] = tuple(value) if isinstance(value, list) else value
    return settings_type(**values)


# What check_fields accepts for each field type: a bool is True/False only, an int is not a bool, a float may be
# an int, a string (a path too) is a str, a list flag is a tuple of str.
_FIELD_TYPES = {"bool": bool, "int": int, "float": float, "str": str, "tuple[str, ...]": tuple}
_TYPE_WORDS = {bool: "true or false", int: "a whole number", float: "a finite number", str: "a string",
               tuple: "a list of strings"}


def _type_name(annotation) -> str:
    if isinstance(annotation, str):
        return annotation
    return "tuple[str, ...]" if annotation == tuple[str, ...] else getattr(annotation, "__name__", "")


def _is_a(value, expected: type) -> bool:
    if expected is tuple:
        return isinstance(value, tuple) and all(isinstance(item, str) for item in value)
    if expected in (int, float) and isinstance(value, bool):
        return False
    if expected is float:
        return isinstance(value, (int, float)) and math.isfinite(value)
    return isinstance(value, expected)


def check_fields(settings, error: type[UserError] = UserError) -> None:
    """The choices and bounds the flags enforce, for settings built in code (tuner trials, tests, notebooks),
    which no flag parser saw; raises `error` naming the first flag out of range."""
    for item in _flag_fields(type(settings)):
        meta, value, name = item.metadata, getattr(settings, item.name), flag_name(item)
        expected = _FIELD_TYPES.get(_type_name(item.type))
        if expected and not _is_a(value, expected):
            raise error(f"--{name}={value!r}: not {_TYPE_WORDS[expected]}; give {_TYPE_WORDS[expected]}")
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
            elif item.type in (float, "float"):  # as the flag parses it back: 0 set in code reads as 0.0
                lines.append(f"--{name}={float(current)}")
            else:
                lines.append(f"--{name}={current}")
    return "\n".join(lines) + "\n"


HELP_REQUESTS = re.compile(r"-(-?(help|helpshort)(=(true|t|1|yes|y))?|\?)", re.IGNORECASE)
OTHER_GROUP = "other"


def help_groups(*settings_types) -> dict[str, list[dataclasses.Field]]:
    """Group name -> its flag fields, groups in the order they first appear (a field without one: `other`)."""
    groups: dict[str, list[dataclasses.Field]] = {}
    for settings_type in settings_types:
        for item in _flag_fields(settings_type):
            groups.setdefault(item.metadata.get("group") or OTHER_GROUP, []).append(item)
    return groups


def help_text(program: str, doc: str | None, *settings_types) -> str:
    """What `--help` prints: the command's docstring, then its own flags by group, each with its default, its
    choices or range, and its help; the libraries' flags are left to --helpfull."""
    width = max(60, min(shutil.get_terminal_size((100, 24)).columns, 110))
    lines = [f"usage: python -m {program} [--flagfile=FILE] [--flag=value ...]", ""]
    if doc:
        lines += [textwrap.dedent(doc).strip(), ""]
    for group, items in help_groups(*settings_types).items():
        lines.append(f"{group}:")
        for item in items:
            lines += textwrap.wrap(_flag_usage(item), width, initial_indent="  ", subsequent_indent=" " * 6)
            lines += textwrap.wrap(item.metadata["help"], width, initial_indent=" " * 6, subsequent_indent=" " * 6)
        lines.append("")
    lines += textwrap.wrap("--flagfile=FILE reads flags from a file (one a line; a later flag overrides an earlier "
                           "one). --helpfull lists every flag, the libraries' (absl, TensorFlow) too.", width)
    return "\n".join(lines) + "\n"


def _flag_usage(item: dataclasses.Field) -> str:
    """`--name=default` (`--[no]name` for a switch) with the values the flag takes."""
    meta, name, default = item.metadata, flag_name(item), item.default
    if item.type in (bool, "bool"):
        return f"--[no]{name}  (default: {'on' if default else 'off'})"
    shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
    text = f"--{name}={shown}"
    if meta["choices"]:
        return f"{text}  (one of: {', '.join(map(str, meta['choices']))})"
    if isinstance(default, tuple):
        return f"{text}  (comma-separated list)"
    lower, upper = meta["lower"], meta["upper"]
    if lower is not None and upper is not None:
        return f"{text}  (range: {lower:g} to {upper:g})"
    if lower is not None:
        return f"{text}  (at least {lower:g})"
    if upper is not None:
        return f"{text}  (at most {upper:g})"
    return text


def help_requested(argv: Sequence[str]) -> bool:
    """Whether the arguments ask for --help (-?, --helpshort); those after `--` are positional."""
    for argument in argv[1:]:
        if argument == "--":
            return False
        if HELP_REQUESTS.fullmatch(argument):
            return True
    return False


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
        if help_requested(argv):
            sys.stdout.write(help_text(program, sys.modules["__main__"].__doc__, *settings_types))
            sys.exit(0)
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
        signal.signal(signal.SIGINT, signal.default_int_handler)  # from here Ctrl-C is the command's to handle
        try:
            status = main(*settings, *([argv[1:]] if positional else []))
        except (UserError, *errors) as error:
            fail(program, str(error), getattr(error, "status", EXIT_USAGE))
        except OSError as error:
            if error.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            fail(program, f"no space left writing {error.filename or 'a file'}: free some space (every file is "
                          "written whole or not at all), then rerun the same command to go on")
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


def _command() -> str:
    """The module run as `python -m NAME` ("" when none)."""
    return getattr(getattr(sys.modules.get("__main__"), "__spec__", None), "name", "") or ""


def _interrupted_while_starting(signum, frame):
    print(f"{_command()}: interrupted while starting; nothing was written", file=sys.stderr)
    sys.exit(EXIT_INTERRUPTED)


def _raise_interrupt(signum, frame):
    raise Terminated
