"""`--help` of every command: its own flags grouped by topic, with defaults and ranges, exit status 0 and none of
the libraries' flags (those are --helpfull's); every settings field in a group; and `~` in a path flag expanded
once, where flags become settings."""

import contextlib
import dataclasses
import importlib
import io
import json
import os
import pathlib
import pkgutil
import re
import runpy
import subprocess
import sys
import textwrap

import pytest
from absl import flags

import trainer
from tests.conftest import once
from trainer import cli
from trainer.auditing.settings import AuditConfig
from trainer.evaluation.evaluate import EvaluationConfig
from trainer.preflight.settings import DoctorSettings
from trainer.serving.export import ExportSettings
from trainer.serving.predict import PredictSettings
from trainer.training.config import Config
from trainer.tuning.settings import Settings

REPO = pathlib.Path(__file__).parents[1]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
COMMANDS = {
    "trainer.main": (Config,),
    "trainer.evaluate": (EvaluationConfig,),
    "trainer.predict": (PredictSettings,),
    "trainer.export": (ExportSettings,),
    "trainer.tune": (Config, Settings),
    "trainer.doctor": (Config, DoctorSettings),
    "trainer.audit": (AuditConfig,),
}
# How each command is asked: absl's spellings of --help, and help wins over a bad flag before it.
ASKS = {"trainer.main": ("--phase1_epochs=-1", "-?"), "trainer.tune": ("--helpshort",), "trainer.predict":
        ("--help", "photo.jpg")}
HELPFULL = ("trainer.evaluate", "--helpfull")
# Flags of absl, TensorFlow and TFDS that --helpfull lists and --help must not.
LIBRARY_FLAGS = ("--verbosity", "--logtostderr", "--alsologtostderr", "--only_check_args", "--pdb_post_mortem",
                 "--run_with_profiling", "--use_cprofile_for_profiling", "--tt_check_filter", "--helpxml")


def flag_fields(settings_type) -> list[dataclasses.Field]:
    return [item for item in dataclasses.fields(settings_type) if "help" in item.metadata]


def run_as_main(module: str, *args: str) -> tuple[int | str | None, str]:
    """(exit status, stdout) of `python -m module args`, run in this interpreter as the command runs itself (its
    module as __main__, its own imports and cli.run). Its own flags leave absl's global FLAGS afterwards, so the
    next command defines its own afresh; the libraries' flags stay, as in a process of their own."""
    sys.argv = [module, *args]
    printed = io.StringIO()
    status = None
    try:
        with contextlib.redirect_stdout(printed):
            runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as done:
        status = done.code
    finally:
        for item in (item for settings_type in COMMANDS[module] for item in flag_fields(settings_type)):
            if cli.flag_name(item) in flags.FLAGS:
                delattr(flags.FLAGS, cli.flag_name(item))
    return status, printed.getvalue()


def print_every_help(out: str) -> None:
    """Writes {"module args": [exit status, stdout]} to `out` for every command's help and one --helpfull: one
    interpreter pays TensorFlow's import once instead of once per command."""
    asked = [(module, *ASKS.get(module, ("--help",))) for module in COMMANDS] + [HELPFULL]
    pathlib.Path(out).write_text(json.dumps({" ".join(ask): run_as_main(*ask) for ask in asked}))


@pytest.fixture(scope="module")
def helps(shared_dir) -> dict[str, list]:
    """Every command's help, asked in one child process (the tests' own interpreter keeps absl's FLAGS clean),
    once for all xdist workers."""
    def make(out: pathlib.Path) -> dict[str, list]:
        done = subprocess.run([sys.executable, "-c", f"from tests.test_help import print_every_help; "
                               f"print_every_help({str(out)!r})"], cwd=REPO, env=ENV, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(out.read_text())

    return once(shared_dir, "every_help", make)


@pytest.mark.xdist_group("help")
@pytest.mark.parametrize("module", COMMANDS)
def test_help_lists_the_commands_own_flags_by_group_and_exits_0(module, helps):
    status, stdout = helps[" ".join((module, *ASKS.get(module, ("--help",))))]
    assert status == 0, stdout[-2000:]
    groups = cli.help_groups(*COMMANDS[module])
    assert len(groups) >= 2 and cli.OTHER_GROUP not in groups
    flags_part = stdout.split(textwrap.dedent(importlib.import_module(module).__doc__).strip(), 1)[1]
    headings = [line[:-1] for line in flags_part.splitlines() if re.fullmatch(r"[a-z][a-z -]*:", line)]
    assert headings == list(groups)  # every group, in the order of the settings
    text = " ".join(flags_part.split())
    for item in (item for items in groups.values() for item in items):
        name = cli.flag_name(item)
        assert f"--{name}=" in text or f"--[no]{name} " in text, name
        if item.metadata["choices"]:
            assert f"(one of: {', '.join(map(str, item.metadata['choices']))})" in text, name
    assert not [flag for flag in LIBRARY_FLAGS if flag in stdout]
    assert "--helpfull" in text  # where the libraries' flags are


@pytest.mark.xdist_group("help")
def test_the_libraries_flags_are_listed_by_helpfull(helps):
    status, stdout = helps[" ".join(HELPFULL)]
    assert status == 1  # absl ends --helpfull with exit status 1
    assert [flag for flag in LIBRARY_FLAGS if f"{flag}:" in stdout or f"--[no]{flag[2:]}:" in stdout] == list(
        LIBRARY_FLAGS)


def test_help_shows_each_flags_default_range_or_choices_under_its_group():
    text = " ".join(cli.help_text("trainer.main", "Trains.", Config).split())
    assert text.startswith("usage: python -m trainer.main [--flagfile=FILE] [--flag=value ...] Trains. data: ")
    assert "--pool_dropout=0.5 (range: 0 to 0.99) Dropout rate after global average pooling." in text
    assert "--phase1_epochs=10 (at least 0)" in text
    assert "--[no]jit_compile (default: off)" in text
    assert "--heads= (comma-separated list)" in text
    assert "optimisation: --lr_schedule=cosine (one of: cosine, constant)" in text
    assert text.index(" model: ") < text.index("--backbone=") < text.index(" augmentation: ")


def test_help_is_asked_by_absls_spellings_only_before_a_double_dash():
    asked = [["prog", flag] for flag in ("--help", "-help", "-?", "--helpshort", "--help=true")]
    assert all(cli.help_requested(argv) for argv in asked)
    not_asked = [["prog", "--nohelp"], ["prog", "--help=false"], ["prog", "--helpfull"], ["prog", "--", "--help"],
                 ["prog", "--model_dir=--help"]]
    assert not any(cli.help_requested(argv) for argv in not_asked)


def _settings_types() -> set[type]:
    """Every dataclass in trainer/ with a field made by cli.field: a new settings class is checked too."""
    found = set()
    for module_info in pkgutil.walk_packages(trainer.__path__, "trainer."):
        if module_info.name.endswith("__main__"):
            continue
        module = importlib.import_module(module_info.name)
        for value in vars(module).values():
            if isinstance(value, type) and dataclasses.is_dataclass(value) and flag_fields(value):
                found.add(value)
    return found


def test_every_field_of_every_settings_dataclass_is_in_a_group():
    settings_types = _settings_types()
    assert settings_types == {types for command in COMMANDS.values() for types in command}
    ungrouped = [f"{settings_type.__name__}.{item.name}" for settings_type in settings_types
                 for item in flag_fields(settings_type) if not item.metadata.get("group")]
    assert ungrouped == []


def test_a_field_without_a_group_is_listed_under_other():
    @dataclasses.dataclass(frozen=True)
    class Loose:
        grouped: int = cli.field(1, "In a group.", group="numbers")
        loose: str = cli.field("", "In none.")

    assert {group: [item.name for item in items] for group, items in cli.help_groups(Loose).items()} == {
        "numbers": ["grouped"], cli.OTHER_GROUP: ["loose"]}


@pytest.mark.parametrize("settings_type", sorted({t for types in COMMANDS.values() for t in types},
                                                   key=lambda t: t.__name__))
def test_a_tilde_in_a_path_flag_is_expanded_into_home(settings_type, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    paths = [item for item in flag_fields(settings_type) if item.metadata["path"]]
    assert paths, settings_type.__name__
    settings = cli.parse([f"--{cli.flag_name(item)}=~/{item.name}" for item in paths], settings_type)
    for item in paths:
        assert getattr(settings, item.name) == str(tmp_path / item.name)
    plain = cli.parse([], settings_type)  # defaults too: Config's ~/tensorflow_datasets
    assert not [item.name for item in paths if getattr(plain, item.name).startswith("~")]


def test_only_a_leading_tilde_of_a_path_flag_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    config = cli.parse(["--model_dir=runs/~x", "--weights=imagenet", "--dataset_config=~odd"], Config)
    assert (config.model_dir, config.weights, config.dataset_config) == ("runs/~x", "imagenet", "~odd")
