"""The tuner's search spaces, declared in one table: `SPACES[name]` is what `--search_space=name` searches.

Every parameter is a Config field of the same name, so a trial's config is the base config (the trainer
flags) with the space's fixed settings and the sampled values put in, and a trial's parameters read as flags.
A parameter with a `when` condition is sampled only when the condition holds for the config built so far
(parameters are sampled in table order): weight decay only under AdamW, which is the optimizer that uses it.
"""

import dataclasses
from collections.abc import Callable, Mapping

import optuna

from pipelines import balancing
from trainer.training.config import Config, ConfigError, validate


@dataclasses.dataclass(frozen=True)
class Param:
    """One searched Config field: a float or int range (log-uniform with log=True), or a list of choices."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple | None = None
    when: Callable[[Config], bool] | None = None
    note: str = ""

    def ends(self) -> tuple:
        """The extreme values, which the tuner validates against the base config before any trial runs."""
        return (self.choices[0], self.choices[-1]) if self.choices is not None else (self.low, self.high)

    def describe(self) -> str:
        if self.choices is not None:
            text = "{" + ", ".join(str(choice) for choice in self.choices) + "}"
        else:
            text = f"[{self.low:g}, {self.high:g}]{' log' if self.log else ''}"
        return text + (f"  ({self.note})" if self.note else "")


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """fixed: Config fields every trial of the space sets; params: the searched fields, sampled in order."""

    help: str
    fixed: Mapping[str, object]
    params: Mapping[str, Param]


def _uses(field: str, value) -> Callable[[Config], bool]:
    return lambda config: getattr(config, field) == value


_HEAD = {
    "phase1_learning_rate": Param(1e-4, 1e-1, log=True),
    "pool_dropout": Param(0.0, 0.6),
    "dense_units": Param(choices=(0, 128, 256, 512)),
    "dense_dropout": Param(0.0, 0.6, when=lambda c: c.dense_units > 0, note="with a hidden layer"),
    "l2": Param(1e-6, 1e-2, log=True, when=lambda c: c.dense_units > 0, note="with a hidden layer"),
    "weight_decay": Param(1e-6, 1e-2, log=True, when=_uses("optimizer", "adamw"), note="--optimizer=adamw"),
    "label_smoothing": Param(0.0, 0.2),
    "warmup_epochs": Param(0.0, 2.0, when=_uses("lr_schedule", "cosine"), note="--lr_schedule=cosine"),
    "class_weights": Param(choices=("none", *balancing.SCHEMES)),
    "class_weight_beta": Param(choices=(0.99, 0.999, 0.9999), when=_uses("class_weights", "effective_number"),
                               note="effective_number weights"),
}

SPACES = {
    "head": SearchSpace(
        help="The head on the frozen backbone (phase 1 only; with --phase1_cached_features each trial trains on "
             "cached embeddings in seconds): rate, dropouts, hidden units, L2, weight decay, label smoothing, "
             "warmup, class weighting.",
        fixed={"phase2_epochs": 0, "oversample_epochs": 0, "oversample_f1_threshold": 0.0},
        params=_HEAD),
    "full": SearchSpace(
        help="Both phases: the head's parameters plus the fine-tuning rate, the number of unfrozen backbone "
             "layers, augmentation strength and class-balanced sampling.",
        fixed={},
        params={
            **_HEAD,
            "phase2_learning_rate": Param(1e-6, 1e-3, log=True, when=lambda c: c.phase2_epochs > 0,
                                          note="--phase2_epochs>0"),
            "unfreeze_layers": Param(choices=(20, 40, 80, 160, -1), when=lambda c: c.phase2_epochs > 0,
                                     note="--phase2_epochs>0; -1 = all"),
            "augment_strength": Param(0.25, 1.5, when=lambda c: c.augment != "none", note="--augment set"),
            "sampling_temperature": Param(0.0, 1.0, when=lambda c: not c.phase1_cached_features,
                                          note="not with --phase1_cached_features"),
        }),
}

_FIELD_TYPES = {field.name: field.type for field in dataclasses.fields(Config)}
assert all(name in _FIELD_TYPES for space in SPACES.values() for name in (*space.fixed, *space.params))


def suggest(trial: optuna.trial.BaseTrial, space: SearchSpace, base: Config) -> dict:
    """Samples the space's parameters that apply to base (and to the values sampled before them)."""
    config, params = dataclasses.replace(base, **space.fixed), {}
    for name, param in space.params.items():
        if param.when is not None and not param.when(config):
            continue
        if param.choices is not None:
            value = trial.suggest_categorical(name, param.choices)
        elif _FIELD_TYPES[name] is int:
            value = trial.suggest_int(name, int(param.low), int(param.high), log=param.log)
        else:
            value = trial.suggest_float(name, param.low, param.high, log=param.log)
        params[name] = value
        config = dataclasses.replace(config, **{name: value})
    return params


def trial_config(base: Config, space: SearchSpace, params: Mapping, model_dir: str) -> Config:
    """The config a trial trains with: base, the space's fixed fields, the trial's parameters, its run dir."""
    return dataclasses.replace(base, **space.fixed, **params, model_dir=model_dir)


def check(base: Config, space_name: str) -> None:
    """Raises ConfigError (one line) when some value of the space cannot run on base, before any trial."""
    space = SPACES[space_name]
    config = dataclasses.replace(base, **space.fixed)
    if space_name == "head" and config.phase1_epochs <= 0:
        raise ConfigError(f"--search_space=head trains phase 1 only but --phase1_epochs={config.phase1_epochs}: set "
                          "--phase1_epochs>0 (e.g. 10), or use --search_space=full")
    for end in (0, 1):
        probe = config
        for name, param in space.params.items():
            if param.when is None or param.when(probe):
                probe = dataclasses.replace(probe, **{name: param.ends()[end]})
        try:
            validate(probe)
        except ConfigError as error:
            raise ConfigError(f"--search_space={space_name}: {error}") from None


def describe(space_name: str) -> str:
    """The space as a table a person reads (printed at the start of a study)."""
    space = SPACES[space_name]
    lines = [f"search space {space_name}: {space.help}"]
    lines += [f"  {name} = {value}  (fixed)" for name, value in space.fixed.items()]
    lines += [f"  {name} in {param.describe()}" for name, param in space.params.items()]
    return "\n".join(lines)
