"""What a study leaves in its directory and prints: the progress line, trials.csv, the history, importances,
intermediate-values and timeline plots, best.flags (trainer.main retrains the best trial with it) and the
summary of the best trials and of every failure's error. Each file is replaced whole (trainer.training.run_dir), so a
kill while the outputs are written leaves the previous version, never half a trials.csv or best.flags.
"""

import pathlib
import warnings

import optuna
import pandas as pd
from optuna.trial import TrialState

from trainer.training.config import Config, flagfile_text
from trainer.training.run_dir import replace_atomically, write_atomically
from trainer.tuning import space as space_lib
from trainer.tuning import storage as storage_lib
from trainer.tuning.settings import Settings
from trainer.tuning.study import StudyHandle
from trainer.tuning.worker import format_value, one_line, trial_dir, trial_epochs


def progress(study: optuna.Study, n_trials: int) -> str:
    budget = storage_lib.counted(study.get_trials(deepcopy=False))[:n_trials]
    states = [trial.state for trial in budget]
    done = sum(state.is_finished() for state in states)
    complete = [trial for trial in budget if trial.state == TrialState.COMPLETE]
    best = max(complete, key=lambda trial: trial.value, default=None)
    text = (f"{done}/{n_trials} trials done: {states.count(TrialState.COMPLETE)} complete, "
            f"{states.count(TrialState.PRUNED)} pruned, {states.count(TrialState.FAIL)} failed; "
            f"{states.count(TrialState.RUNNING)} running")
    return text + (f"; best {best.value:.4f} (trial {best.number})" if best else "")


def best_flags_text(trial: optuna.trial.FrozenTrial, base: Config, settings: Settings) -> tuple[str, pathlib.Path]:
    """A flagfile for trainer.main that retrains the best trial's config in a fresh model_dir."""
    model_dir = settings.study_dir / f"best_run_{trial.number:04d}"
    config = space_lib.trial_config(base, settings.space, trial.params, str(model_dir))
    header = [f"# Best trial {trial.number} of study {settings.study_name}: validation macro-F1 {trial.value:.4f} "
              f"(its run: {trial.user_attrs.get('model_dir', trial_dir(settings, trial))}).",
              f"# Retrain it: python -m trainer.main --flagfile={settings.study_dir / 'best.flags'}",
              "# No trial read the test split: the retrain reads it once, the study's final test.",
              "# (a later flag overrides, e.g. --model_dir=runs/final --train_split=train+validation)"]
    return "\n".join(header) + "\n" + flagfile_text(config), model_dir


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """Optuna's table of the trials, whose error column also shows why another process failed a trial."""
    frame = study.trials_dataframe()
    errors = [storage_lib.trial_error(study, trial) for trial in study.get_trials(deepcopy=False)]
    if any(errors):
        frame["user_attrs_error"] = errors
    return frame


def _plot_functions() -> dict:
    from optuna.visualization import matplotlib as plots

    return {"history": plots.plot_optimization_history, "importances": plots.plot_param_importances,
            "intermediate": plots.plot_intermediate_values, "timeline": plots.plot_timeline}


def _plot(name: str, path: pathlib.Path, plot, study: optuna.Study) -> str:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            axes = plot(study)
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        figure.set_size_inches(10, 6)
        figure.tight_layout()
        replace_atomically(path, lambda partial: figure.savefig(partial, dpi=100), suffix=".png")
        pyplot.close("all")
        return f"{name}: {path}"
    except Exception as error:
        pyplot.close("all")
        path.unlink(missing_ok=True)
        return f"{name}: not drawn ({one_line(error)})"


def write_outputs(handle: StudyHandle, base: Config, settings: Settings) -> dict:
    """trials.csv, the plots, best.flags and the printed summary; returns the paths written."""
    study, directory = handle.study, settings.study_dir
    outputs = {"study_dir": str(directory), "trials_csv": str(directory / "trials.csv")}
    replace_atomically(directory / "trials.csv", lambda partial: trials_frame(study).to_csv(partial, index=False))
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    lines = []
    for name, plot in _plot_functions().items():
        path = directory / f"{name}.png"
        if name == "importances" and len(complete) < 2:
            path.unlink(missing_ok=True)
            lines.append(f"importances: not drawn (needs 2 completed trials, the study has {len(complete)})")
            continue
        lines.append(_plot(name, path, plot, study))
        if path.exists():
            outputs[name] = str(path)
    if complete:
        best = study.best_trial
        text, model_dir = best_flags_text(best, base, settings)
        write_atomically(directory / "best.flags", text)
        outputs.update(best_flags=str(directory / "best.flags"), best_trial=best.number, best_value=best.value,
                       best_model_dir=str(model_dir))
        lines.append(f"best.flags: {directory / 'best.flags'}  (retrain: python -m trainer.main "
                     f"--flagfile={directory / 'best.flags'}; its test figure is the study's final test)")
    else:
        lines.append("best.flags: not written (no completed trial)")
    lines.append(f"dashboard: optuna-dashboard {handle.storage.label}")
    print(summary_table(study, settings) + "\n" + "\n".join(lines), flush=True)
    return outputs


def summary_table(study: optuna.Study, settings: Settings, top: int = 10) -> str:
    """The study's state counts, its best trials with their parameters, and the failed trials' errors."""
    trials = study.get_trials(deepcopy=False)
    lines = [f"study {settings.study_name}: {progress(study, settings.n_trials)}"]
    ranked = sorted((t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)),
                    key=lambda t: (t.state != TrialState.COMPLETE, -(t.value if t.value is not None else -1)))[:top]
    if ranked:
        names = sorted({name for trial in ranked for name in trial.params})
        header = ["trial", "state", "val_F1", "epochs", "minutes", *names]
        rows = [header] + [_row(trial, names) for trial in ranked]
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines += ["  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in rows]
    for trial in trials:
        if trial.state == TrialState.FAIL and not trial.user_attrs.get("surplus"):
            lines.append(f"trial {trial.number} FAIL: {storage_lib.trial_error(study, trial) or 'no error recorded'}")
    return "\n".join(lines)


def _row(trial: optuna.trial.FrozenTrial, names: list[str]) -> list[str]:
    minutes = trial.duration.total_seconds() / 60 if trial.duration else float("nan")
    return [str(trial.number), trial.state.name, "-" if trial.value is None else f"{trial.value:.4f}",
            str(trial_epochs(trial)), f"{minutes:.1f}", *(format_value(trial.params.get(name)) for name in names)]
