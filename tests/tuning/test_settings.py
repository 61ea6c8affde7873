"""The search spaces, the tuner's settings and its command line: one-line errors with status 2, --helpfull,
the shipped flagfiles, and no flag defined by importing a module."""

import dataclasses
import re
import subprocess
import sys

import optuna
import pytest
from absl import flags

from tests.tuning.common import ENV, REPO, tune_args, tune_cli
from trainer import tune
from trainer.training.config import Config, ConfigError
from trainer.tuning import launcher, space, storage
from trainer.tuning import settings as settings_lib
from trainer.tuning.settings import Settings, TuneError

MODULES = ("trainer.tune", "trainer.tuning", "trainer.tuning.settings", "trainer.tuning.space",
           "trainer.tuning.study", "trainer.tuning.worker", "trainer.tuning.launcher", "trainer.tuning.storage",
           "trainer.tuning.outputs")


def _sampled_configs(base: Config, space_name: str, n: int = 40) -> list[tuple[dict, Config]]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0), direction="maximize")
    configs = []
    for _ in range(n):
        params = space.suggest(study.ask(), space.SPACES[space_name], base)
        configs.append((params, space.trial_config(base, space.SPACES[space_name], params, "/tmp/x")))
    return configs


def test_head_space_keeps_the_backbone_frozen_and_samples_conditional_parameters():
    base = Config(model_dir="unused", backbone="baseline_cnn", weights="none", augment="none", optimizer="adam",
                  phase1_cached_features=True)
    configs = _sampled_configs(base, "head")
    for params, config in configs:
        assert config.phase2_epochs == 0 and config.oversample_epochs == 0
        assert "weight_decay" not in params  # only AdamW uses it
        assert ("dense_dropout" in params) == ("l2" in params) == (config.dense_units > 0)
        assert ("class_weight_beta" in params) == (config.class_weights == "effective_number")
    assert len({params["phase1_learning_rate"] for params, _ in configs}) == len(configs)
    assert len({config.class_weights for _, config in configs}) == 4
    assert all("weight_decay" in params
               for params, _ in _sampled_configs(dataclasses.replace(base, optimizer="adamw"), "head", 5))


def test_full_space_tunes_fine_tuning_augmentation_and_sampling():
    base = Config(model_dir="unused", backbone="baseline_cnn", weights="none", augment="recipe", phase2_epochs=3)
    for params, config in _sampled_configs(base, "full", 10):
        assert {"phase2_learning_rate", "unfreeze_layers", "augment_strength", "sampling_temperature"} <= set(params)
        assert config.phase2_epochs == 3
    cached = dataclasses.replace(base, augment="none", phase1_cached_features=True)
    assert all("sampling_temperature" not in params and "augment_strength" not in params
               for params, _ in _sampled_configs(cached, "full", 10))


def test_gpu_workers_are_pinned_one_group_each():
    def pinned(settings: Settings) -> list[str]:
        return [env["CUDA_VISIBLE_DEVICES"] for env in launcher.worker_envs(settings)]

    assert pinned(Settings(gpus="0,1,3")) == ["0", "1", "3"]
    assert pinned(Settings(gpus="0+1,2+3")) == ["0,1", "2,3"]
    assert pinned(Settings(workers=2)) == ["", ""]
    assert [env[launcher.WORKER_ENV] for env in launcher.worker_envs(Settings(workers=2))] == ["0", "1"]


@pytest.mark.parametrize("args, message", [
    (["--gpus=0,1", "--workers=2"], "--gpus=0,1 and --workers=2: give one of them"),
    (["--gpus=first"], "--gpus=first: give GPU indices separated by commas"),
    (["--study_name="], "--study_name is empty: name the study"),
    (["--phase1_epochs=0"], "--search_space=head trains phase 1 only but --phase1_epochs=0"),
    (["--search_space=full", "--augment=recipe"], "--search_space=full: --phase1_cached_features caches"),
    (["--storage=postgresql://nobody:secret@127.0.0.1:1/none"],
     "--storage=postgresql://nobody:***@127.0.0.1:1/none: cannot open the database"),
], ids=["gpus_and_workers", "bad_gpus", "no_name", "head_without_phase1", "space_contradiction",
        "unreachable_storage"])
def test_bad_settings_are_one_line_errors(args, message, tiny_data_dir, tmp_path):
    base, settings = tune.parse([*tune_args(tiny_data_dir, tmp_path, "bad"), *args])
    with pytest.raises((TuneError, ConfigError, storage.StorageError)) as error:
        tune.run(base, settings)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert not list(tmp_path.glob("*/trial_*"))


@pytest.mark.parametrize("change, message", [
    ({"n_trials": 0}, "--n_trials=0: must be at least 1"),
    ({"heartbeat": 0}, "--heartbeat=0: must be at least 1"),
    ({"max_retries": -1}, "--max_retries=-1: must be at least 0"),
    ({"sampler": "grid"}, "--sampler=grid: choose one of tpe, random, qmc, cmaes"),
    ({"trial_output": "quiet"}, "--trial_output=quiet: choose one of line, full"),
], ids=["no_trials", "no_heartbeat", "negative_retries", "unknown_sampler", "unknown_trial_output"])
def test_settings_built_in_code_are_checked_against_the_flags_bounds(change, message):
    with pytest.raises(TuneError, match=re.escape(message)):
        settings_lib.check_settings(Settings(study_name="ok", **change))


@pytest.mark.parametrize("args, message", [
    (["--search_space=everything"], "flag --search_space=everything: value should be one of <head|full>"),
    (["--n_trials=0"], "flag --n_trials=0: 0 is not a positive integer"),
], ids=["flag_parser", "flag_bound"])
def test_the_flag_parser_refuses_in_one_line(args, message, tmp_path):
    """What the command's parser raises, which cli.run prints as its one line (exit status 2: the test below)."""
    with pytest.raises(flags.Error) as refused:
        tune.parse([*tune_args(tmp_path / "no_data", tmp_path, "bad"), *args])
    assert message in " ".join(str(refused.value).split())


def test_the_command_line_fails_in_one_line_with_status_2(tmp_path):
    done = tune_cli(*tune_args(tmp_path / "no_data", tmp_path, "bad"), "--gpus=0", "--workers=2", timeout=120)
    errors = [line for line in done.stderr.splitlines() if line.startswith("trainer.tune: error:")]
    assert done.returncode == 2, done.stderr
    assert len(errors) == 1 and "--gpus=0 and --workers=2: give one of them" in errors[0]
    assert "Traceback" not in done.stderr


def test_helpfull_documents_every_trainer_and_tuner_flag():
    done = tune_cli("--helpfull", timeout=120)
    for field in (*dataclasses.fields(Config), *dataclasses.fields(Settings)):
        assert f"--{field.name}:" in done.stdout or f"--[no]{field.name}:" in done.stdout, field.name
    assert "tune_worker" not in done.stdout and launcher.WORKER_ENV not in done.stdout


def test_importing_the_tuner_defines_no_flag():
    names = [field.name for field in dataclasses.fields(Settings)]
    script = (f"import {', '.join(MODULES)}\nfrom absl import flags\n"
              f"print([name for name in {names!r} if name in flags.FLAGS])")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("args", [
    ["--flagfile=configs/tune_demo.flags"],
    ["--flagfile=configs/tune_inceptionv3.flags", "--study_name=incv3"],
    ["--flagfile=configs/tune_inceptionv3.flags", "--study_name=incv3", "--search_space=head",
     "--phase1_cached_features", "--augment=none", "--phase1_epochs=20"],  # its comment's head-only variant
], ids=["demo", "inceptionv3", "inceptionv3_head"])
def test_tune_flagfiles_set_a_valid_study(args):
    base, settings = tune.parse(args)
    settings_lib.check_settings(settings)
    space.check(dataclasses.replace(base, model_dir="unused"), settings.search_space)
    if settings.search_space == "head":
        assert base.phase1_cached_features and base.augment == "none"


def test_a_trials_config_without_a_test_split_passes_the_doctors_dataset_check(tiny_data_dir, tmp_path):
    """`trainer.doctor --flagfile=<a trial's flags.txt>` checks the splits the trial reads: no test."""
    from trainer.preflight import data

    base, _ = tune.parse(tune_args(tiny_data_dir, tmp_path, "doctor"))
    trial = dataclasses.replace(base, model_dir=str(tmp_path / "trial_0000"), test_split="")
    result = data.check_dataset(trial)
    assert result.status == "ok" and result.message.endswith("reads train, validation"), result.message
    assert data.check_dataset(dataclasses.replace(trial, test_split="nope")).status == "FAIL"
