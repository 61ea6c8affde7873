"""Every numeric flag of every command, and every field of a settings object built in code, is checked by type
and range: a wrong value is one line, never a traceback, and nothing is written (Hypothesis draws the values)."""

import dataclasses
import math
import subprocess
import sys

import pytest
from absl import flags
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import user_env
from tests.training.test_resume import REPO
from trainer import cli
from trainer.auditing.settings import AuditConfig
from trainer.evaluation.evaluate import EvaluationConfig
from trainer.preflight.settings import DoctorSettings
from trainer.serving.export import ExportSettings
from trainer.serving.predict import PredictSettings
from trainer.training.config import Config
from trainer.tuning.settings import Settings as TuneSettings

SETTINGS = (Config, EvaluationConfig, PredictSettings, ExportSettings, TuneSettings, DoctorSettings, AuditConfig)
FIELDS = [(settings_type, item) for settings_type in SETTINGS for item in dataclasses.fields(settings_type)
          if "help" in item.metadata]
NUMERIC = [(settings_type, item) for settings_type, item in FIELDS if cli._type_name(item.type) in ("int", "float")]


def _not_a_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return True
    return False


def bad_flag_values(item: dataclasses.Field):
    """Text no number parser reads, an int flag's fractions, and values outside the field's bounds."""
    words = st.text(st.characters(codec="ascii", categories=("L", "P", "S", "Zs")), min_size=1, max_size=12)
    candidates = [words.filter(_not_a_number), st.sampled_from(["true", "false", "nan?", "1e", "--"])]
    if cli._type_name(item.type) == "int":
        candidates.append(st.floats(-1e6, 1e6).filter(lambda x: not x.is_integer()).map(repr))
    else:
        candidates.append(st.sampled_from(["nan", "inf", "-inf"]))
    lower, upper = item.metadata["lower"], item.metadata["upper"]
    if lower is not None:
        candidates.append(st.integers(1, 10**6).map(lambda step: repr(type(item.default)(lower - step))))
    if upper is not None:
        candidates.append(st.integers(1, 10**6).map(lambda step: repr(type(item.default)(upper + step))))
    return st.one_of(candidates)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_a_wrong_or_out_of_range_numeric_flag_is_one_line(data):
    settings_type, item = data.draw(st.sampled_from(NUMERIC), label="field")
    value = data.draw(bad_flag_values(item), label="value")
    with pytest.raises(flags.Error) as raised:
        cli.parse([f"--{cli.flag_name(item)}={value}"], settings_type)
    assert "\n" not in str(raised.value).strip()


def wrong_python_values(item: dataclasses.Field):
    """Values of another type than the field's: what a notebook or a JSON file could hand a settings object."""
    kind = cli._type_name(item.type)
    others = {"bool": st.one_of(st.integers(), st.text(max_size=5), st.floats(allow_nan=False)),
              "int": st.one_of(st.booleans(), st.floats(allow_nan=False).filter(lambda x: not x.is_integer()),
                               st.text(max_size=5)),
              "float": st.one_of(st.booleans(), st.text(max_size=5), st.none(),
                                 st.sampled_from([math.nan, math.inf, -math.inf])),
              "str": st.one_of(st.integers(), st.booleans(), st.none(), st.floats(allow_nan=False)),
              "tuple[str, ...]": st.one_of(st.text(max_size=5), st.lists(st.integers(), min_size=1).map(tuple))}
    return others[kind]


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_a_settings_field_of_the_wrong_type_is_one_line(data):
    settings_type, item = data.draw(st.sampled_from(FIELDS), label="field")
    value = data.draw(wrong_python_values(item), label="value")
    wrong = dataclasses.replace(settings_type(), **{item.name: value})
    with pytest.raises(cli.UserError, match=f"--{cli.flag_name(item)}=") as raised:
        cli.check_fields(wrong)
    assert "\n" not in str(raised.value)


def test_every_field_has_a_checked_type():
    unchecked = [f"{settings_type.__name__}.{item.name}" for settings_type, item in FIELDS
                 if cli._type_name(item.type) not in ("bool", "int", "float", "str", "tuple[str, ...]")]
    assert not unchecked
    assert all(not math.isnan(item.default) for _, item in NUMERIC)


@pytest.mark.parametrize("flag", ["--batch_size=true", "--label_smoothing=1.5"])
def test_a_bad_flag_under_the_command_writes_nothing(tmp_path, flag):
    model_dir = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "trainer.main", f"--model_dir={model_dir}", "--weights=none",
                           "--backbone=baseline_cnn", flag], cwd=REPO, env=user_env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("trainer.main: error:") and flag.split("=")[0] in lines[0]
    assert not model_dir.exists()
