"""The builder config's fields, checked by type and range the moment a config is made.

`tfds build --config='{...}'` hands the JSON's values to the config as they are: `"strict": "false"` is a
non-empty string (true to Python), `"short_side": true` is 1 to arithmetic, and a name holding `../` becomes
folders outside --data_dir. So every field has a rule here, and a value that breaks it is a BuildError
naming the field, its value and what it must be, before TFDS or the builder uses it: a bool is true or false
only, an integer is never a bool, a path is a string, a name is one path component.
"""

import dataclasses
import math
import numbers
import re
import reprlib
from typing import Protocol

import tensorflow_datasets as tfds

from tfds_rarespecies import errors

# A config name is a folder under data_dir/rare_species/ and TFDS' `rare_species/NAME:VERSION` parses it:
# letters, digits, `_` and `-`, starting with a letter or digit (no `/`, `.`, `..`, `:` or spaces).
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}")
# A version is a folder under the config's (data_dir/rare_species/NAME/VERSION): x.y.z, as TFDS parses it.
VERSION = re.compile(r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)")
_REPR = reprlib.Repr()  # a value in a message: short, and one line whatever it holds
_REPR.maxstring = _REPR.maxother = 40


class Rule(Protocol):
    def problem(self, value) -> str | None:
        """None when the value is valid, else what the value must be."""


@dataclasses.dataclass(frozen=True)
class Integer(Rule):
    lowest: int
    highest: int

    def problem(self, value) -> str | None:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool) and \
                self.lowest <= value <= self.highest:
            return None
        return f"an integer from {self.lowest} to {self.highest}"


class Boolean(Rule):
    def problem(self, value) -> str | None:
        return None if isinstance(value, bool) else "true or false (a JSON boolean, not a string or number)"


@dataclasses.dataclass(frozen=True)
class Choice(Rule):
    options: tuple[str, ...]

    def problem(self, value) -> str | None:
        return None if isinstance(value, str) and value in self.options else f"one of {', '.join(self.options)}"


@dataclasses.dataclass(frozen=True)
class Text(Rule):
    """A string (a path, a description); `optional` also takes None, as TFDS' own fields do."""

    optional: bool = False

    def problem(self, value) -> str | None:
        if (value is None and self.optional) or (isinstance(value, str) and "\0" not in value):
            return None
        return "a string" + (" or null" if self.optional else "") + " (without NUL characters)"


class Name(Rule):
    def problem(self, value) -> str | None:
        if isinstance(value, str) and NAME.fullmatch(value):
            return None
        return "1 to 100 letters, digits, _ or - starting with a letter or digit (it names a folder)"


class Fractions(Rule):
    """Three finite numbers; that they are positive and sum to 1 is splits.check_scheme's to say."""

    def problem(self, value) -> str | None:
        if isinstance(value, (list, tuple)) and len(value) == 3 and all(
                isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in value):
            return None
        return "3 numbers (train, validation, test), e.g. [0.8, 0.1, 0.1]"


class Version(Rule):
    """TFDS' version: null, or x.y.z (a string, or TFDS' Version, whose str() is x.y.z)."""

    def problem(self, value) -> str | None:
        if value is None or isinstance(value, (str, tfds.core.Version)) and VERSION.fullmatch(str(value)):
            return None
        return "null or a version x.y.z (e.g. \"1.1.0\"; it names a folder)"


@dataclasses.dataclass(frozen=True)
class ListOf(Rule):
    item: Rule
    items: str  # what the list holds, in the message

    def problem(self, value) -> str | None:
        if isinstance(value, (list, tuple)) and all(self.item.problem(v) is None for v in value):
            return None
        return f"a list of {self.items}"


class Notes(Rule):
    """TFDS' release_notes: null or {version: note}."""

    def problem(self, value) -> str | None:
        if value is None or (isinstance(value, dict) and all(
                isinstance(k, str) and isinstance(v, str) for k, v in value.items())):
            return None
        return "null or an object of version -> note strings"


def check(config, rules: dict[str, Rule]) -> None:
    """Raises BuildError for the first field of config (in rules' order) whose value breaks its rule."""
    for field, rule in rules.items():
        value = getattr(config, field)
        expected = rule.problem(value)
        if expected is not None:
            raise errors.BuildError(f"{flag(config.name)}: field {field} is {_REPR.repr(value)}; it must be "
                                    f"{expected}")


def flag(name) -> str:
    """`--config=NAME`, or `--config` alone when the name is itself unusable (it could hold anything)."""
    return f"--config={name}" if Name().problem(name) is None else "--config"
