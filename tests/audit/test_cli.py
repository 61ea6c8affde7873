"""`python -m trainer.audit` as a user meets it: --helpfull documents every flag, importing the package defines
none, and every mistake ends in one `trainer.audit: error:` line with exit status 2 (the flag parser's or the
audit's own, in this process; one case through the real command); a config built in code meets the same checks
as an AuditError."""

import dataclasses
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest
from absl import flags

from trainer import cli
from trainer.auditing import settings
from trainer.auditing.run import run

REPO = pathlib.Path(__file__).parents[2]
FLAG_NAMES = [cli.flag_name(item) for item in dataclasses.fields(settings.AuditConfig)]
MODULES = {"embedders", "proposals", "review", "run", "scores", "settings"}
HAS_OPEN_CLIP = importlib.util.find_spec("open_clip") is not None


def python(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=180)


def test_helpfull_documents_every_flag():
    done = python("-m", "trainer.audit", "--helpfull")  # absl ends help with exit status 1
    for name in FLAG_NAMES:
        assert f"--{name}:" in done.stdout, name


def test_importing_any_audit_module_defines_no_flag():
    script = ("import importlib, json, pkgutil\n"
              "from absl import flags\n"
              "import trainer.auditing\n"
              "modules = [module.name for module in pkgutil.iter_modules(trainer.auditing.__path__)]\n"
              "for name in modules:\n"
              "    importlib.import_module(f'trainer.auditing.{name}')\n"
              f"print(json.dumps({{'modules': modules, 'defined': [name for name in {FLAG_NAMES!r} "
              "if name in flags.FLAGS]}))\n")
    done = python("-c", script)
    assert done.returncode == 0, done.stderr
    imported = json.loads(done.stdout.splitlines()[-1])
    assert set(imported["modules"]) == MODULES
    assert imported["defined"] == []


@pytest.mark.parametrize("args, message", [
    (["--folds=1"], "flag --folds=1: 1 is not integer >= 2"),
    (["--embedder=foo"], "flag --embedder=foo: value should be one of <backbone|color_stats>"),
    (["--backbone=resnet9000"], "flag --backbone=resnet9000: value should be one of <baseline_cnn|"),
    (["--non_photo_threshold=1.5"], "flag --non_photo_threshold=1.5: 1.5 is not a number in the range [0, 1]"),
    (["--max_proposed_share=1.5"], "flag --max_proposed_share=1.5: 1.5 is not a number in the range [0, 1]"),
    (["--weights=/no/such/weights.h5"], "--weights=/no/such/weights.h5: no such file"),
    ([], "--data_dir={empty} --config=small_128: rare_species/small_128 is not built in {empty}: run `tfds build "
         "rare_species --imports=tfds_rarespecies --config=small_128"),
    pytest.param(["--embedder=color_stats", "--zero_shot_model={empty}/bioclip.bin"],
                 "--zero_shot_model needs open_clip, which is not installed",
                 marks=pytest.mark.skipif(HAS_OPEN_CLIP, reason="open_clip is installed here")),
], ids=["folds", "unknown_embedder", "unknown_backbone", "threshold_range", "cap_range", "missing_weights",
        "dataset_not_built",
        "zero_shot_without_open_clip"])
def test_mistakes_end_in_one_error_line(args, message, tmp_path):
    """What the command does with these flags, in this process: the flag parser's refusal (absl's flags.Error)
    or the audit's AuditError, either of which cli.run prints as its one line."""
    empty, out = tmp_path / "empty", tmp_path / "out"
    argv = [f"--data_dir={empty}", "--config=small_128", f"--out={out}", *(arg.format(empty=empty) for arg in args)]
    with pytest.raises((flags.Error, settings.AuditError)) as refused:
        run(cli.parse(argv, settings.AuditConfig))
    assert message.format(empty=empty) in " ".join(str(refused.value).split())
    assert not out.exists()


def test_a_mistake_under_the_command_is_one_error_line_with_status_2(tmp_path):
    empty, out = tmp_path / "empty", tmp_path / "out"
    done = python("-m", "trainer.audit", f"--data_dir={empty}", "--config=small_128", f"--out={out}")
    errors = [line for line in done.stderr.splitlines() if line.startswith("trainer.audit: error:")]
    assert done.returncode == 2, done.stderr
    assert len(errors) == 1 and f"rare_species/small_128 is not built in {empty}" in errors[0], done.stderr
    assert "Traceback" not in done.stderr
    assert not out.exists()


@pytest.mark.parametrize("fields, message", [
    ({"embedder": "color_stats"}, r"^--data_dir=\S+ --config=small_128: rare_species/small_128 is not built in "
                                  r"\S+: run `tfds build rare_species"),
    ({"dataset_config": "huge", "embedder": "color_stats"},
     r"^--data_dir=\S+ --config=huge: rare_species has no config huge, neither shipped \(.*small_128.*\) nor "
     r"built in \S+"),
    ({"backbone": "baseline_cnn"}, r"^--weights=imagenet: baseline_cnn has no pretrained weights"),
    ({"embedder": "foo"}, r"^--embedder=foo: choose one of backbone, color_stats"),
    ({"folds": 1}, r"^--folds=1: must be at least 2"),
    ({"label_issue_threshold": -0.1}, r"^--label_issue_threshold=-0.1: must be at least 0"),
], ids=["dataset_not_built", "unknown_config", "no_pretrained_weights", "unknown_embedder", "folds",
        "threshold_range"])
def test_configs_built_in_code_fail_with_one_line_audit_errors(fields, message, tmp_path):
    config = settings.AuditConfig(**{"data_dir": str(tmp_path), "dataset_config": "small_128",
                                     "out": str(tmp_path / "out"), **fields})
    with pytest.raises(settings.AuditError, match=message) as raised:
        run(config)
    assert isinstance(raised.value, cli.UserError) and "\n" not in str(raised.value)
    assert not (tmp_path / "out").exists()


def test_unloadable_weights_fail_before_any_image_is_read(planted, tmp_path):
    weights = tmp_path / "baseline.weights.h5"
    weights.write_bytes(b"not an HDF5 file")
    config = settings.AuditConfig(data_dir=str(planted.data_dir), dataset_config="small_128",
                                  out=str(tmp_path / "out"), backbone="baseline_cnn", weights=str(weights))
    with pytest.raises(settings.AuditError, match=r"^--weights=.*: cannot load baseline_cnn weights \(.*\); give"):
        run(config)
    assert not (tmp_path / "out").exists()
