"""One worker: draws trials from the study (`study.ask`) until the budget is used, each trial one
`trainer.training.train.run` with the trial's parameters put into the base config, and finishes each (`study.tell`).

The objective is the run's best validation macro-F1; each epoch's value goes to the pruner through train.run's
on_epoch_end hook. A trial never reads the test split (its --test_split is empty): model selection sees train and
validation only, and the test split is read once, by the retrain of best.flags. A trial that raises is FAIL with
its `error` and the worker goes on; Ctrl-C or SIGTERM fails the running trial, queues it again (an
interruption is no failure: no retry limit) and goes on up.

Each finished trial is one line (`trial_line`); with --trial_output=line what the trial prints goes to
trial_NNNN.log beside its run directory instead of the console (beside, not in: train.run refuses a model_dir that
holds files but no flags.txt, and a retry appends to its first attempt's log).
"""

import contextlib
import dataclasses
import gc
import math
import pathlib
import signal
import threading
import time
import traceback
import warnings

import keras
import optuna
from optuna.trial import TrialState

from trainer import cli
from trainer.training import train
from trainer.training.config import Config
from trainer.tuning import space as space_lib
from trainer.tuning import storage as storage_lib
from trainer.tuning.settings import Settings
from trainer.tuning.study import StudyHandle

INTERRUPTED = "interrupted (Ctrl-C or SIGTERM): queued again for the next start"


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}"[:1000]


@contextlib.contextmanager
def signals_ignored():
    """SIGINT and SIGTERM ignored for a moment (main thread only; others cannot set handlers): while an
    interrupted worker queues its trial again, and while the launcher waits for its workers to do so."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {number: signal.signal(number, signal.SIG_IGN) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in saved.items():
            signal.signal(number, handler)


def trial_dir(settings: Settings, trial: optuna.trial.FrozenTrial) -> pathlib.Path:
    """trial_NNNN; a retried trial reuses its first attempt's directory, so the trainer resumes that run."""
    history = storage_lib.retry_history(trial) or [trial.number]
    return settings.study_dir / f"trial_{history[0]:04d}"


def trial_log(run_dir: pathlib.Path) -> pathlib.Path:
    """trial_NNNN.log beside the trial's run directory trial_NNNN/."""
    return run_dir.with_name(f"{run_dir.name}.log")


@contextlib.contextmanager
def trial_output(run_dir: pathlib.Path, mode: str):
    """line: what the block prints goes to trial_log(run_dir) (appended); full: to the console. Either way an
    exception's traceback is printed there before it goes on up."""
    with cli.output_to(trial_log(run_dir)) if mode == "line" else contextlib.nullcontext():
        try:
            yield
        except optuna.TrialPruned:
            raise
        except Exception:
            traceback.print_exc()
            raise


def format_value(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def trial_epochs(trial: optuna.trial.FrozenTrial) -> int:
    """Epochs the trial trained: all phases of a complete one, the last reported of a pruned one."""
    return trial.user_attrs.get("epochs", max(trial.intermediate_values, default=0))


def trial_line(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> str:
    """One finished trial in one line: number, outcome, validation macro-F1, epochs, minutes, parameters."""
    minutes = f"{trial.duration.total_seconds() / 60:.1f} min" if trial.duration else "- min"
    params = " ".join(f"{name}={format_value(value)}" for name, value in trial.params.items())
    if trial.state == TrialState.COMPLETE:
        outcome = f"complete: validation macro-F1 {trial.value:.4f}"
    elif trial.state == TrialState.PRUNED:
        outcome = (f"pruned at epoch {trial.last_step}: validation macro-F1 "
                   f"{trial.intermediate_values[trial.last_step]:.4f}")
    else:
        error = storage_lib.trial_error(study, trial) or "its value is not a number"
        model_dir = trial.user_attrs.get("model_dir")
        log = trial_log(pathlib.Path(model_dir)) if model_dir else None
        outcome = f"failed: {error}" + (f" (log {log})" if log and log.exists() else "")
    return f"trial {trial.number} {outcome}; {trial_epochs(trial)} epochs, {minutes}; {params}".rstrip("; ")


class Worker:
    """Draws trials from the study until the budget is used; each trial is one train.run."""

    def __init__(self, handle: StudyHandle, base: Config, settings: Settings, index: int):
        self.handle, self.study, self.base, self.settings, self.index = handle, handle.study, base, settings, index
        self.poll_seconds = min(10.0, settings.heartbeat / 2)

    def run(self) -> None:
        settings, study = self.settings, self.study
        deadline = time.monotonic() + settings.timeout if settings.timeout else math.inf
        while True:
            for line in storage_lib.fail_stale_trials(study, self.handle.storage):
                print(f"tune: {line}", flush=True)
            step = storage_lib.next_step(study, settings.n_trials)
            if step == "done":
                return
            if time.monotonic() > deadline:
                print(f"tune: worker {self.index}: --timeout={settings.timeout:g} s reached; rerun the command to "
                      "go on", flush=True)
                return
            if step == "wait":  # others' trials may still come back as retries
                time.sleep(self.poll_seconds)
                continue
            self.run_trial()

    def run_trial(self) -> None:
        """Asks for a trial (a queued retry first), runs it, tells its outcome and prints it."""
        with warnings.catch_warnings():
            # Optuna warns that its database heartbeat is meant for Study.optimize; `heartbeat` records it here.
            warnings.filterwarnings("ignore", message="Heartbeat of storage")
            trial = self.study.ask()
        try:
            value, state = self._outcome(trial)
        except KeyboardInterrupt:
            with signals_ignored():  # a second Ctrl-C must not lose the trial
                self._requeue_interrupted(trial)
            raise
        finally:
            keras.backend.clear_session()
            gc.collect()
        # skip_if_finished: another worker may have taken this one for dead meanwhile, failed and requeued it.
        told = self.study.tell(trial, value, state=state, skip_if_finished=True)
        print(f"tune: {trial_line(self.study, told)}", flush=True)

    def _outcome(self, trial: optuna.Trial) -> tuple[float | None, TrialState | None]:
        """(value, state) to tell, state None for a value (a NaN one fails); an exception's one-line error
        becomes the trial's `error` attribute."""
        trial.set_user_attr("worker", storage_lib.worker_tag(self.index))
        if storage_lib.over_budget(self.study, trial.number, self.settings.n_trials):
            trial.set_user_attr("surplus", True)
            trial.set_user_attr("error", f"not run: the study already has its {self.settings.n_trials} trials")
            return None, TrialState.FAIL
        try:
            with storage_lib.heartbeat(self.handle.storage, self.study, trial.number, self.settings.heartbeat):
                return self._train(trial), None
        except optuna.TrialPruned:
            return None, TrialState.PRUNED
        except Exception as error:
            trial.set_user_attr("error", one_line(error))
            return None, TrialState.FAIL

    def _requeue_interrupted(self, trial: optuna.Trial) -> None:
        try:
            trial.set_user_attr("error", INTERRUPTED)
        except optuna.exceptions.UpdateFinishedTrialError:
            return  # finished (or failed by another worker, which queued it again) before the interruption
        failed = storage_lib.fail_trial(self.study, trial.number)
        if failed:
            storage_lib.requeue(self.study, failed, max_retries=None)

    def _train(self, trial: optuna.Trial) -> float:
        params = space_lib.suggest(trial, self.settings.space, self.base)
        run_dir = trial_dir(self.settings, storage_lib.frozen_trial(self.study, trial.number))
        # No test split: a trial's figures are for choosing, and choosing must not see test. No TensorBoard
        # images (seconds a trial): the HParams table of flags and validation figures compares the trials.
        config = dataclasses.replace(space_lib.trial_config(self.base, self.settings.space, params, str(run_dir)),
                                     test_split="", tensorboard_images=False)
        trial.set_user_attr("model_dir", str(run_dir))
        mode = self.settings.trial_output

        def report(epoch: int, val_macro_f1: float) -> None:
            trial.report(val_macro_f1, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"at epoch {epoch}: validation macro-F1 {val_macro_f1:.4f}")

        resuming = run_dir.exists() and run_dir.name != f"trial_{trial.number:04d}"  # a retry's first attempt
        try:
            with trial_output(run_dir, mode):
                results = train.run(config, on_epoch_end=report)
        except optuna.TrialPruned:
            raise
        except Exception as error:
            if not resuming:
                raise
            # A worker killed while Keras wrote a checkpoint leaves a truncated file the resume cannot read: the
            # retry starts the trial over instead of failing for good.
            broken = run_dir.with_name(f"{run_dir.name}.unresumable_{trial.number:04d}")
            run_dir.rename(broken)
            trial.set_user_attr("resume_failed", one_line(error))
            print(f"tune: trial {trial.number}: resuming {run_dir} failed ({one_line(error)}); moved it to "
                  f"{broken.name} and started the trial over", flush=True)
            keras.backend.clear_session()
            with trial_output(run_dir, mode):
                results = train.run(config, on_epoch_end=report)
        trial.set_user_attr("epochs", sum(phase["epochs"] for phase in results["phases"].values()))
        return results["best_val_macro_f1"]
