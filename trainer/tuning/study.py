"""The study: the base config every trial starts from, opening (or creating) the study in its storage with the
check that a rerun uses the flags the study was started with, and its sampler and pruner.
"""

import dataclasses
import os
import warnings
import zlib

import optuna

from trainer.training import inputs
from trainer.training.config import Config, flagfile_text
from trainer.tuning import space as space_lib
from trainer.tuning import storage as storage_lib
from trainer.tuning.settings import Settings, TuneError


@dataclasses.dataclass
class StudyHandle:
    """An open study and the storage it lives in."""

    study: optuna.Study
    storage: storage_lib.Storage


def prepare_base(base: Config, settings: Settings) -> Config:
    """The base config made position-independent (absolute paths, for workers and best.flags), with the
    study's shared feature cache; model_dir is each trial's own."""
    if base.model_dir:
        print(f"tune: note: --model_dir={base.model_dir} is not used; each trial runs in "
              f"{settings.study_dir}/trial_NNNN", flush=True)

    def absolute(path: str) -> str:
        return path if path.startswith("~") else os.path.abspath(path)

    weights = base.weights if base.weights in ("imagenet", "pretrained", "none") else absolute(base.weights)
    return dataclasses.replace(base, data_dir=absolute(base.data_dir), weights=weights, model_dir="",
                               feature_cache_dir=absolute(base.feature_cache_dir or
                                                          str(settings.study_dir / "features")))


def check_base(base: Config, settings: Settings) -> None:
    """ConfigError (one line) unless every value of the space can run on base and the dataset is built."""
    probe = dataclasses.replace(base, model_dir=str(settings.study_dir / "trial_0000"))
    space_lib.check(probe, settings.search_space)
    inputs.dataset_info(probe)


def sampler_seed(seed: int, worker_index: int, existing_trials: int, database: bool) -> int:
    """--seed + the worker's index for a fresh study on one machine (reproducible with one worker); otherwise
    (a resumed study, or a database shared by machines) a seed of this process's own, so that no worker replays
    the random draws another worker or an earlier run already made."""
    if existing_trials == 0 and not database:
        return seed + worker_index
    return zlib.crc32(f"{seed}:{worker_index}:{existing_trials}:{storage_lib.HOST}:{os.getpid()}".encode())


def make_sampler(settings: Settings, seed: int) -> optuna.samplers.BaseSampler:
    """QMC draws point <trial number> of one sequence: the same --seed for every worker and restart."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if settings.sampler == "qmc":
            return optuna.samplers.QMCSampler(seed=seed, scramble=True)
        if settings.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if settings.sampler == "cmaes":
            return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=settings.sampler_startup_trials,
                                                warn_independent_sampling=False)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=settings.sampler_startup_trials,
                                          multivariate=True, group=True, constant_liar=True)


def total_epochs(base: Config, settings: Settings) -> int:
    config = dataclasses.replace(base, **settings.space.fixed)
    return config.phase1_epochs + config.phase2_epochs + config.oversample_epochs


def make_pruner(base: Config, settings: Settings) -> optuna.pruners.BasePruner:
    if settings.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=settings.pruner_startup_trials,
                                           n_warmup_steps=settings.pruner_warmup_epochs)
    if settings.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, total_epochs(base, settings)),
                                              reduction_factor=3)
    return optuna.pruners.NopPruner()


def identity(base: Config, settings: Settings) -> dict[str, str]:
    """What defines a study: its search space and the base flags, all but this machine's paths and memory
    budget."""
    machine_free = dataclasses.replace(base, data_dir="", feature_cache_dir="", model_dir="",
                                       train_cache_gib=Config.train_cache_gib)
    return {"search_space": settings.search_space, "base_flags": flagfile_text(machine_free)}


def check_identity(study: optuna.Study, wanted: dict[str, str], settings: Settings, label: str) -> None:
    """Stores the identity in a new study; refuses a study started with other flags or another space."""
    stored = study.user_attrs
    if "base_flags" not in stored:
        for key, value in wanted.items():
            study.set_user_attr(key, value)
        return
    if {key: stored.get(key) for key in wanted} == wanted:
        return
    old, new = set(stored["base_flags"].splitlines()), set(wanted["base_flags"].splitlines())
    changed = " ".join(sorted(new - old))
    if stored.get("search_space") != settings.search_space:
        changed = f"--search_space={settings.search_space} {changed}"
    raise TuneError(f"study {settings.study_name} in {label} was started with other flags (now {changed.strip()}): "
                    "rerun it with its own flags, or choose a new --study_name")


def open_study(base: Config, settings: Settings, worker_index: int = 0) -> StudyHandle:
    """Creates or loads the study; refuses one started with other base flags or another search space."""
    storage = storage_lib.open_storage(settings.storage, settings.study_dir, settings.heartbeat, settings.max_retries)
    study = optuna.create_study(storage=storage.optuna_storage, study_name=settings.study_name,
                                direction="maximize", pruner=make_pruner(base, settings), load_if_exists=True)
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise TuneError(f"--study_name={settings.study_name}: {storage.label} holds a study of that name that "
                        "minimises: choose a new --study_name")
    check_identity(study, identity(base, settings), settings, storage.label)
    existing = len(study.get_trials(deepcopy=False))
    study.sampler = make_sampler(settings, base.seed if settings.sampler == "qmc" else
                                 sampler_seed(base.seed, worker_index, existing, storage.heartbeat_dir is None))
    return StudyHandle(study, storage)
