"""The house's one-way flow: a room imports only the rooms below it (README.md, "Rooms").

Each room's every module is imported in a fresh interpreter, which then lists the modules it loaded; a module of
any room above it fails the test. The numbers and figures leaves also load no TensorFlow, Keras, absl or dataset code.
"""

import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Bottom to top, as README.md's table of rooms lists them.
ROOMS = (
    ("builder", "tfds_rarespecies"),
    ("pipelines", "pipelines"),
    ("cli", "trainer.cli"),
    ("numbers", "trainer.numbers"),
    ("figures", "trainer.figures"),
    ("training", "trainer.training"),
    ("serving", "trainer.serving"),
    ("evaluation", "trainer.evaluation"),
    ("tuning", "trainer.tuning"),
    ("auditing", "trainer.auditing"),
    ("preflight", "trainer.preflight"),
)
COMMANDS = ("trainer.main", "trainer.evaluate", "trainer.predict", "trainer.export", "trainer.tune",
            "trainer.doctor", "trainer.audit")
LEAF_FORBIDDEN = ("tensorflow", "keras", "absl", "tensorflow_datasets", "tfds_rarespecies", "pipelines")

LOADED = """
import importlib, json, pkgutil, sys
package = importlib.import_module(sys.argv[1])
for info in pkgutil.walk_packages(getattr(package, "__path__", []), package.__name__ + "."):
    if not info.name.endswith("__main__") and ".rare_species.dummy" not in info.name:
        importlib.import_module(info.name)
print(json.dumps(sorted(sys.modules)))
"""


def loaded_by(module: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", LOADED, module], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin",
                                            "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


def belongs(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


@pytest.mark.parametrize("position", range(len(ROOMS)), ids=[name for name, _ in ROOMS])
def test_a_room_imports_no_room_above_it(position):
    name, prefix = ROOMS[position]
    loaded = loaded_by(prefix)
    above = [f"{module} ({room})" for room, room_prefix in ROOMS[position + 1:] for module in loaded
             if belongs(module, room_prefix)]
    commands = [module for module in loaded if module in COMMANDS]
    assert not above and not commands, f"{name} ({prefix}) imports rooms above it: {above + commands}"


@pytest.mark.parametrize("leaf, module", [("trainer.numbers", "trainer.numbers.metrics"),
                                          ("trainer.figures", "trainer.figures.pages")])
def test_the_leaves_need_no_tensorflow(leaf, module):
    loaded = loaded_by(leaf)
    assert module in loaded
    forbidden = [name for name in loaded for prefix in LEAF_FORBIDDEN if belongs(name, prefix)]
    assert not forbidden, f"{leaf} loads {forbidden[:5]}"


def test_the_leafs_ranks_are_the_builders():
    from tfds_rarespecies import labels
    from trainer.numbers import metrics
    assert metrics.RANKS == labels.RANKS


def test_every_command_module_exists_and_every_room_has_its_row_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    for command in COMMANDS:
        assert (ROOT / (command.replace(".", "/") + ".py")).is_file(), command
        assert f"python -m {command}" in readme, f"README.md shows no example of {command}"
    for _, prefix in ROOMS[2:]:
        path = prefix.replace(".", "/")
        assert path in readme, f"README.md's table of rooms has no row for {path}"
