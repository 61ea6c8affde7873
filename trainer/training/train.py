"""The one training path: `run(config) -> results`, called by main, the tuner, benchmarks and tests.

A run is a sequence of phases, each with a fresh optimizer and its own warmup + cosine schedule:
  phase1      the head alone, backbone frozen (on cached embeddings with --phase1_cached_features);
  phase2      the last --unfreeze_layers backbone layers too, at a lower rate;
  oversample  optional: families under --oversample_f1_threshold validation F1 are drawn more often.
Each phase starts from the best checkpoint so far (validation macro-F1) and leaves a done-marker, so rerunning
an interrupted command skips finished phases and BackupAndRestore resumes the unfinished one mid-way. At the
end the best checkpoint is evaluated on the validation and test splits (test once: the run's final figure;
not at all with an empty --test_split, as in the tuner's trials) with the one metric definition
(trainer/numbers/metrics.py, what trainer.evaluate reports too) and saved with its label names.

Under MultiWorkerMirroredStrategy every worker runs this same code on a shared model_dir: only the chief
writes the run's files, the others save into a scratch directory they delete (trainer/training/run_dir.py), and every
choice that decides which collective ops run next is the chief's, agreed with distribute.agree.
"""

import contextlib
import dataclasses
import json
import pathlib
import shutil
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

import pipelines
from trainer.numbers import calibration, metrics, rollup
from trainer.training import (
    calibration_file,
    console,
    distribute,
    input_wait,
    inputs,
    models,
    objectives,
    recipe,
    schedules,
    tensorboard_log,
    wise_ft,
)
from trainer.training import callbacks as callbacks_lib
from trainer.training.config import PRESENTATION_FLAGS, Config, ConfigError, flagfile_text, validate
from trainer.training.run_dir import (
    FolderLock,
    RunFiles,
    RunLockedError,
    check_folder,
    replace_atomically,
    write_atomically,
)

PHASES = ("phase1", "phase2", "oversample")


@dataclasses.dataclass(frozen=True)
class Phase:
    name: str
    epochs: int
    learning_rate: float
    unfreeze_layers: int
    cached: bool = False


def run(config: Config, extra_callbacks: Sequence[keras.callbacks.Callback] = (),
        on_epoch_end: callbacks_lib.EpochHook | None = None) -> dict:
    """Trains, selects, tests and saves one model; returns the results also written to metrics.json.

    extra_callbacks: added to every phase's fit (e.g. a tuner's pruning callback).
    on_epoch_end: called after every epoch as on_epoch_end(epoch, val_macro_f1), epochs numbered across phases
      from 1; an exception it raises (e.g. optuna.TrialPruned) ends the run.
    Raises ConfigError (one line for the user) on a contradictory config, a dataset that is not built, weights
    that cannot be loaded, a model_dir another process is writing or that holds another run. Everything
    checkable is checked before the first file of the run is written, so a corrected command starts cleanly.
    """
    validate(config)
    distribute.split_cpu(config.cpu_devices)
    if distribute.multi_worker_requested(config.strategy) and config.phase1_cached_features:
        raise ConfigError("--phase1_cached_features runs the backbone over whole splits in one process and "
                          "caches the result, which several workers cannot share: use "
                          "--nophase1_cached_features with --strategy=multi_worker or TF_CONFIG")
    strategy = distribute.make_strategy(config.strategy)
    distribute.check_supported(strategy, config.jit_compile)
    recipe.check_strategy(config, strategy)
    info = inputs.dataset_info(config)
    files = RunFiles(pathlib.Path(config.model_dir).expanduser())
    check_folder(files.model_dir, "--model_dir")
    chief = distribute.is_chief(strategy)
    try:
        # Only the chief writes the run's files; the other workers of a cluster share its model_dir.
        with FolderLock(files.lock) if chief else contextlib.nullcontext():
            return _run_locked(config, strategy, info, files, (extra_callbacks, on_epoch_end))
    except RunLockedError as error:
        raise ConfigError(f"--model_dir={config.model_dir}: {error}: wait for it to finish or stop it; rerunning "
                          "the same command then resumes the run") from None


def _run_locked(config: Config, strategy: tf.distribute.Strategy, info: pipelines.DatasetInfo, files: RunFiles,
                hooks: tuple) -> dict:
    """The run itself, once this process holds model_dir: checks, then the first files, then the phases."""
    record = trained_on(config, info)
    check_claim(files, config, record)
    set_numerics(config)
    cfg = inputs.input_config(config)
    with strategy.scope():
        classifier = _build_classifier(config, cfg, info)
    trainer = _Trainer(config, strategy, files, classifier, info, *hooks)
    print(console.start_header(config, strategy, info, trainer.steps(cfg)), flush=True)
    if distribute.is_chief(strategy):
        write_atomically(files.flagfile, flagfile_text(config))
        write_atomically(files.trained_on, json.dumps(record, indent=1))
        tensorboard_log.write_hparams(files.tensorboard, config)
        if config.tensorboard_images:
            grid = tensorboard_log.augmented_grid(config, info.names[config.label_rank])
            tensorboard_log.write_images(files.tensorboard, {"inputs/augmented_training_batch": grid}, step=0)
    trainer.run_phase(Phase("phase1", config.phase1_epochs, config.phase1_learning_rate, 0,
                            cached=config.phase1_cached_features), cfg)
    wise_ft.keep_probe(config, files, trainer.chief)
    trainer.run_phase(Phase("phase2", config.phase2_epochs, config.phase2_learning_rate, config.unfreeze_layers),
                      cfg)
    if config.oversample_epochs:
        weak = trainer.weak_labels()
        trainer.run_phase(Phase("oversample", config.oversample_epochs if weak else 0,
                                config.phase2_learning_rate, config.unfreeze_layers),
                          inputs.input_config(config, weak))
    wise_ft.average(config, wise_ft.Averaging(files, classifier.model, trainer.validation_macro_f1, trainer.chief,
                                              lambda values: distribute.agree(strategy, values)))
    results = trainer.finish()
    print(summary_table(results))
    return results


def _build_classifier(config: Config, cfg: pipelines.InputConfig, info: pipelines.DatasetInfo) -> models.Classifier:
    """The model, its backbone's weights loaded; weights that cannot be had (no network for imagenet, a file
    that is not the backbone's weights) are one line. Keras reports a failed download as a bare Exception."""
    try:
        return models.build_classifier(config, pipelines.model_front_layers(cfg),
                                       {rank: len(info.names[rank]) for rank in config.head_ranks})
    except Exception as error:  # noqa: BLE001 (the weights' loaders raise Exception, OSError, ValueError)
        if config.weights == "none":
            raise
        detail = " ".join(str(error).split())[:200] or type(error).__name__
        local = "a keras-hub preset directory, docs/train.md" if config.backbone_spec.hub else \
            "a .weights.h5 of the same backbone without top"
        raise ConfigError(f"--weights={config.weights}: the {config.backbone} weights could not be loaded "
                          f"({detail}); with no network pass a local copy (--weights=PATH, {local}) or "
                          "--weights=none") from None


def trained_on(config: Config, info: pipelines.DatasetInfo) -> dict:
    """What a run is trained on, recorded in trained_on.json: the dataset (name/config/version), its split
    sizes and the build's digest of each split's file names, and the identity of the starting weights (a
    file's sha256, or imagenet / none)."""
    weights = config.weights
    if weights not in ("imagenet", "pretrained", "none"):
        path = pathlib.Path(weights).expanduser()
        weights = f"sha256:{pipelines.weights_digest(weights)}" if path.exists() else weights
    return {"dataset": info.full_name, "examples": dict(sorted(info.num_examples.items())),
            "split_digests": dict(sorted(info.split_digests.items())), "weights": weights}


def check_claim(files: RunFiles, config: Config, record: dict | None = None) -> None:
    """Refuses, in one line, to start or continue a run in model_dir unless it is this one: files of a run
    without flags.txt, a run with other flags, or one trained on another dataset, other splits or other weights
    (record: trained_on's; None skips that check). Writes nothing.

    A flag the earlier run's flags.txt does not name (added by a later version) counts as the same when it is at
    its default, which is what that run trained with; the file is then rewritten with it. A run from before
    trained_on.json was written has its record written now.
    """
    start_over = f"use a new --model_dir, or delete {files.model_dir} to start over"
    if not files.flagfile.exists():
        present = files.run_files_present()
        if present:
            raise ConfigError(f"--model_dir={config.model_dir} holds files ({', '.join(present[:3])}) but no "
                              f"flags.txt, so no run of trainer.main this command could continue: {start_over}")
        return
    changed = _changed_flags(files.flagfile.read_text(), flagfile_text(config))
    if changed:
        raise ConfigError(f"--model_dir={config.model_dir} holds a run with other flags (now {changed}): "
                          f"{start_over}")
    if record is not None and files.trained_on.exists():
        differs = _record_changes(json.loads(files.trained_on.read_text()), record)
        if differs:
            raise ConfigError(f"--model_dir={config.model_dir} was trained on something else ({differs}): rebuild "
                              f"the dataset as it was or restore the weights, or {start_over}")


def _record_changes(old: dict, new: dict) -> str:
    """What differs between two trained_on records, in words ("" if nothing); digests absent from a record
    (a dataset built before the build report held them) are not compared."""
    changes = [f"{key} {old.get(key)} -> now {new[key]}" for key in ("dataset", "weights")
               if old.get(key) != new[key]]
    changes += [f"{split} split of {old['examples'].get(split)} -> now {count} examples"
                for split, count in new["examples"].items() if old.get("examples", {}).get(split, count) != count]
    old_digests = old.get("split_digests", {})
    changes += [f"the {split} split's files" for split, digest in new["split_digests"].items()
                if old_digests.get(split, digest) != digest]
    return "; ".join(changes)


def _changed_flags(old_text: str, new_text: str) -> str:
    """The lines of new_text that make it another run than old_text ("" if none): a flag set otherwise, or
    one old_text does not name (a flag added since) away from its default; PRESENTATION_FLAGS never count."""
    old, new = (_lines_by_flag(text, skip=PRESENTATION_FLAGS) for text in (old_text, new_text))
    defaults = set(flagfile_text(Config()).splitlines())
    changed = [line for flag, line in new.items() if (line != old[flag] if flag in old else line not in defaults)]
    changed += [f"no --{flag}" for flag in old if flag not in new]
    return " ".join(sorted(changed))


def _lines_by_flag(text: str, skip: Sequence[str] = ()) -> dict[str, str]:
    """flag name -> its flagfile line (a boolean's line is --name or --noname, without a value), the flags in
    skip left out."""
    lines = {}
    for line in text.splitlines():
        name = line.removeprefix("--").split("=", 1)[0]
        lines[name.removeprefix("no") if "=" not in line and name.startswith("no") else name] = line
    return {name: line for name, line in lines.items() if name not in skip}


def set_numerics(config: Config) -> None:
    """Process-wide settings, set on every run so one run's choice never leaks into the next (the tuner runs
    many in one process)."""
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.mixed_precision.set_global_policy("float32" if config.mixed_precision == "none"
                                            else config.mixed_precision)


def monitor_name(config: Config) -> str:
    """Keras prefixes metric names with the output name once a model has two outputs."""
    return f"val_{config.label_rank}_macro_f1" if len(config.head_ranks) > 1 else "val_macro_f1"


class _Trainer:
    """The state the phases of one run share: strategy, models, run files and epochs done so far."""

    def __init__(self, config: Config, strategy: tf.distribute.Strategy, files: RunFiles,
                 classifier: models.Classifier, info: pipelines.DatasetInfo,
                 extra_callbacks: Sequence[keras.callbacks.Callback], on_epoch_end):
        self.config, self.strategy, self.files = config, strategy, files
        self.classifier, self.info = classifier, info
        self.monitor = monitor_name(config)
        self.global_batch_size = config.batch_size * strategy.num_replicas_in_sync
        self.epochs_done = 0
        self.progress = console.progress_mode(config.progress)
        # Where this process saves: the run directory on the chief, a scratch directory on other workers.
        self.chief = distribute.is_chief(strategy)
        self.scratch = None if self.chief else files.scratch(distribute.task_id(strategy))
        self.hooks = callbacks_lib.RunHooks(self._load_best, on_epoch_end, extra_callbacks, self.scratch,
                                            lambda: distribute.barrier(strategy))
        self._clear_scratch()

    def _agree(self, *values):
        """The chief's values on every worker (and a barrier): see distribute.agree."""
        return distribute.agree(self.strategy, values)

    def _clear_scratch(self) -> None:
        if self.scratch is not None:
            shutil.rmtree(self.scratch.model_dir, ignore_errors=True)

    def steps(self, cfg: pipelines.InputConfig) -> int:
        """Training steps per epoch: --steps_per_epoch, or one pass over the training split."""
        return self.config.steps_per_epoch or pipelines.steps_per_epoch(cfg, self.config.train_split,
                                                                        self.strategy.num_replicas_in_sync)

    def run_phase(self, phase: Phase, cfg: pipelines.InputConfig) -> None:
        done = self.files.read_done(phase.name)
        [done_epochs] = self._agree(None if done is None else done["epochs"])
        if done_epochs is not None:
            print(f"{phase.name}: already complete ({int(done_epochs)} epochs), skipped")
            self.epochs_done += int(done_epochs)
            return
        if phase.epochs:
            self._say_resume(phase)
            self._fit(phase, cfg)
        epochs = 0
        if self.chief:
            history = self.files.history([phase.name])
            best = callbacks_lib.best_logged(history, self.monitor)
            self.files.mark_done(phase.name, {"epochs": len(history), "best_val_macro_f1": best})
            epochs = len(history)
        # Also the barrier after which the other workers may read what the chief wrote in this phase.
        [epochs] = self._agree(epochs)
        self.epochs_done += int(epochs)

    def _say_resume(self, phase: Phase) -> None:
        """One line when an interrupted phase picks up from its resume state: where, and the best so far."""
        if not self.files.backup(phase.name).exists():
            return
        logged = len(self.files.history([phase.name]))
        best = callbacks_lib.best_logged(self.files.history(PHASES), self.monitor)
        print(f"resuming {phase.name} after epoch {logged} of {phase.epochs} (run epoch {self.epochs_done + logged})"
              f" from {self.files.backup(phase.name)}; best {self.monitor} so far "
              f"{'-' if best is None else console.number(best)}", flush=True)

    def _fit(self, phase: Phase, cfg: pipelines.InputConfig) -> None:
        config, classifier = self.config, self.classifier
        self._load_best()
        models.set_trainable_backbone(classifier, phase.unfreeze_layers, keep_batchnorm_frozen=config.pretrained)
        steps = self.steps(cfg)
        peak = distribute.scaled_learning_rate(phase.learning_rate, self.global_batch_size, config.lr_scaling,
                                               config.reference_batch_size)
        rate = schedules.learning_rate(peak, steps, phase.epochs, config.lr_schedule, config.warmup_epochs,
                                       config.final_learning_rate_fraction)
        fit_model, train, validation = self._fit_inputs(phase, cfg)
        self._compile(fit_model, rate, cfg.soft_labels)
        # Every worker must checkpoint at the same epochs: the same threshold, the chief's.
        [best_before] = self._agree(callbacks_lib.best_logged(self.files.history(PHASES), self.monitor))
        self._clear_scratch()
        wait = input_wait.InputWait(phase.name, self.files.csv_log(phase.name))
        fit_model.fit(wait.probed(train), validation_data=validation, epochs=phase.epochs, steps_per_epoch=steps,
                      shuffle=False, verbose=int(self.progress == "bar"),
                      callbacks=callbacks_lib.phase_callbacks(self.files, callbacks_lib.PhaseRules(
                          phase.name, self.monitor, checkpoint=not phase.cached,
                          constant_rate=config.lr_schedule == "constant", patience=config.early_stopping_patience,
                          plateau_patience=config.plateau_patience, best_so_far=best_before,
                          first_step=self.epochs_done, input_wait=wait, epochs=phase.epochs,
                          progress=self.progress, ema=config.ema), self.hooks))
        if phase.cached:
            # The head trained alone; early stopping restored its best epoch, which the full model now holds.
            best_now = callbacks_lib.best_logged(self.files.history([phase.name]), self.monitor)
            if best_before is None or best_now > best_before:
                replace_atomically(self.files.best_weights, classifier.model.save_weights, suffix=".weights.h5")

    def _fit_inputs(self, phase: Phase, cfg: pipelines.InputConfig):
        """(model to fit, training batches, validation batches): images through the full model, or cached
        embeddings through the head alone."""
        config = self.config
        if not phase.cached:
            return (self.classifier.model, inputs.dataset(self.strategy, cfg, config.train_split, True),
                    inputs.dataset(self.strategy, cfg, config.validation_split, False))
        weights_id, cache_dir = pipelines.weights_id(config.weights, config.seed), inputs.feature_cache_dir(config)
        batches = []
        for split, training in ((config.train_split, True), (config.validation_split, False)):
            features = pipelines.cached_features(self.classifier.embedder, weights_id, cfg, split, cache_dir)
            split_batches = inputs.embedding_dataset(features, cfg, config.train_split, self.global_batch_size,
                                                     training)
            batches.append(split_batches if training else
                           inputs.even_across_replicas(split_batches, self.strategy.num_replicas_in_sync))
        return self.classifier.head_trainer, *batches

    def _compile(self, model: keras.Model, rate, one_hot_labels: bool) -> None:
        """Compiles under the strategy (metrics and optimizer make their variables there)."""
        config = self.config
        with self.strategy.scope():
            optimizer = recipe.optimizer(config, rate, model, self.classifier.backbone)
            model.compile(optimizer=optimizer, jit_compile=config.jit_compile, **objectives.compile_arguments(
                config.label_rank, config.aux_loss_weight, config.label_smoothing,
                {rank: len(self.info.names[rank]) for rank in config.head_ranks}, one_hot_labels,
                config.soft_labels_beta, self._lca_heights() if config.soft_labels_beta else None,
                adjustments=recipe.logit_adjustments(config)))

    def _lca_heights(self) -> dict[str, np.ndarray]:
        """Each head's LCA heights between its labels in the dataset's tree (--soft_labels_beta's distances)."""
        taxonomy = self.info.taxonomy
        return {rank: metrics.lca_heights(metrics.taxonomy_paths(self.info.names[rank], taxonomy.ancestors(rank)))
                for rank in self.config.head_ranks}

    def _load_best(self) -> None:
        """Best checkpoint's layer weights into the model; the optimizer state in the file belongs to the
        phase that wrote it, not to the one about to run. Every worker loads the chief's file, complete since
        the last phase's agree."""
        model = self.classifier.model
        optimizer = getattr(model, "optimizer", None)  # set once the model is compiled
        if self.files.best_weights.exists():
            model.load_weights(self.files.best_weights, objects_to_skip=[optimizer] if optimizer else None)

    def _predict_best(self, splits: Sequence[str], cfg: pipelines.InputConfig, every_head: bool = False
                      ) -> list[tuple[np.ndarray, np.ndarray | dict[str, np.ndarray]]]:
        """For each split, (label ids, probabilities) at the label rank of every example under the best checkpoint,
        through the serving model on the evaluation view, as trainer.evaluate sees the saved model.keras; with
        every_head, the probabilities are {head: rows} of every head.

        A plain loop outside the strategy: the variables read their local copies and no collective op runs,
        so each worker of a multi-worker run gets the same numbers on its own. One trace for every batch size."""
        self._load_best()
        return self._predict(splits, cfg, every_head, "the best checkpoint")

    def validation_macro_f1(self) -> float:
        """Validation macro-F1 of the weights the model holds now, as finish() measures it (WiSE-FT's alpha)."""
        [evaluated] = self._predict([self.config.validation_split], inputs.input_config(self.config), False,
                                    "the WiSE-FT average")
        return metrics.macro_f1(*_ids(evaluated))

    def _predict(self, splits: Sequence[str], cfg: pipelines.InputConfig, every_head: bool, what: str
                 ) -> list[tuple[np.ndarray, np.ndarray | dict[str, np.ndarray]]]:
        """_predict_best's predictions under the weights the model holds now (what: their name, printed)."""
        serving, size = self.classifier.serving, self.config.input_size
        heads = self.config.head_ranks if every_head else (self.config.label_rank,)

        def heads_of(images):
            outputs = serving(images, training=False)
            return {head: outputs[head] for head in heads}

        probabilities_of = tf.function(heads_of, input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)])
        evaluated = []
        for split in splits:
            print(f"evaluating {what} on {split}")
            labels, probabilities = [], {head: [] for head in heads}
            for images, ids in pipelines.make_dataset(inputs.evaluation_view(cfg), split, training=False):
                for head, rows in probabilities_of(images).items():
                    probabilities[head].append(rows.numpy())
                labels.append(ids.numpy())
            rows = {head: np.concatenate(batches) for head, batches in probabilities.items()}
            evaluated.append((np.concatenate(labels).astype(np.int64),
                              rows if every_head else rows[self.config.label_rank]))
        return evaluated

    def weak_labels(self) -> tuple[str, ...]:
        """Labels (at --label_rank) whose validation F1 under the best checkpoint is below
        --oversample_f1_threshold, chosen once and kept in model_dir so a resumed run oversamples the same ones."""
        chosen = self.files.oversampled_labels
        [exists] = self._agree(chosen.exists())
        if not exists:
            [(labels, probabilities)] = self._predict_best([self.config.validation_split],
                                                           inputs.input_config(self.config))
            names = self.info.names[self.config.label_rank]
            f1, support = metrics.per_class_f1(labels, probabilities.argmax(axis=1), len(names))
            weak = sorted(name for name, score, count in zip(names, f1, support)
                          if count and score < self.config.oversample_f1_threshold)
            print(f"oversample: {len(weak)} {self.config.label_rank} names under validation F1 "
                  f"{self.config.oversample_f1_threshold}: {', '.join(weak) or 'none'}")
            if self.chief:
                write_atomically(chosen, json.dumps(weak))
            return tuple(weak)
        return tuple(json.loads(chosen.read_text()))

    def finish(self) -> dict:
        """Evaluates the best checkpoint on validation and test (trainer/numbers/metrics.py, the numbers
        trainer.evaluate reports), saves the serving model, labels and metrics."""
        config, files = self.config, self.files
        # An empty --test_split (the tuner's trials) leaves test unread: model selection never sees it.
        splits = {"validation": config.validation_split, **({"test": config.test_split} if config.test_split else {})}
        every_head = dict(zip(splits, self._predict_best(list(splits.values()), inputs.input_config(config),
                                                         every_head=True)))
        evaluated = {split: (ids, heads[config.label_rank]) for split, (ids, heads) in every_head.items()}
        # Every worker saves (saving may run collective ops); only the chief's copy is kept.
        replace_atomically((self.scratch or files).model, self.classifier.serving.save, suffix=".keras")
        self._clear_scratch()
        # The label rank first: readers of labels.json take its first head as the one the model names.
        label_names = {rank: list(self.info.names[rank]) for rank in (config.label_rank, *config.head_ranks)}
        if self.chief:
            write_atomically(files.labels, json.dumps(label_names, indent=1))
            write_atomically(files.taxonomy, self.info.taxonomy.to_text())
            # The roll-up's temperatures and validation confidences, for predict --rollup_precision.
            calibration_file.write(files.model_dir, calibration.fit_rollup(
                rollup.label_tree(label_names, self.info.taxonomy), *every_head["validation"]))
        results = {
            "best_val_macro_f1": callbacks_lib.best_logged(files.history(PHASES), self.monitor),
            **{name: metrics.headline_metrics(*pair) for name, pair in evaluated.items()},
            "label_rank": config.label_rank,
            **_final_test(config, evaluated.get("test"), self.info.names[config.label_rank]),
            "phases": {phase: done for phase in PHASES if (done := files.read_done(phase))},
            **wise_ft.recorded(files),
            "strategy": distribute.public_name(self.strategy),
            "replicas": self.strategy.num_replicas_in_sync,
            "global_batch_size": self.global_batch_size,
            "paths": {"model_dir": str(files.model_dir), "flagfile": str(files.flagfile),
                      "model": str(files.model), "labels": str(files.labels), "metrics": str(files.metrics),
                      "calibration": str(files.calibration),
                      "best_weights": str(files.best_weights)},
        }
        if self.chief:
            write_atomically(files.metrics, json.dumps(results, indent=2))
            self._tensorboard_record(*evaluated["validation"], results)
        # No worker returns (and exits) before the chief has written every file.
        distribute.barrier(self.strategy)
        return results


    def _tensorboard_record(self, labels: np.ndarray, probabilities: np.ndarray, results: dict) -> None:
        """The run's last TensorBoard record at its last epoch: the final metrics of the HParams table, and with
        --tensorboard_images the validation split's confusion by phylum and the worst classes' mistakes."""
        config, names = self.config, self.info.names[self.config.label_rank]
        board = self.files.tensorboard
        tensorboard_log.write_final_metrics(board, results, step=self.epochs_done)
        if not config.tensorboard_images:
            return
        tensorboard_log.write_images(board, {
            "validation/confusion_by_phylum": tensorboard_log.phylum_confusion(
                labels, probabilities, names, self.info.taxonomy.phylum_of(config.label_rank), "validation"),
            "validation/worst_classes_mistakes": tensorboard_log.worst_mistakes(config, labels, probabilities, names),
        }, step=self.epochs_done)


def _final_test(config: Config, evaluated: tuple[np.ndarray, np.ndarray] | None, names: Sequence[str]) -> dict:
    """The test split's per-label F1, labelled as the run's final test (none when test was not read)."""
    if evaluated is None:
        return {}
    test_f1, test_support = metrics.per_class_f1(*_ids(evaluated), len(names))
    return {"final_test_split": config.test_split,
            f"test_f1_per_{config.label_rank}": {name: float(score) for name, score, count in
                                                 zip(names, test_f1, test_support) if count}}


def _ids(evaluated: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(true ids, predicted ids) from (true ids, probabilities)."""
    labels, probabilities = evaluated
    return labels, probabilities.argmax(axis=1)


def summary_table(results: dict) -> str:
    """A few lines a person reads at the end of a run: per-phase epochs and best validation macro-F1, then the
    best checkpoint's validation and test metrics."""
    lines = [f"{'phase':<12}{'epochs':>8}{'best val macro-F1':>20}"]
    for phase, summary in results["phases"].items():
        best = summary["best_val_macro_f1"]
        lines.append(f"{phase:<12}{summary['epochs']:>8}{'-' if best is None else f'{best:.4f}':>20}")
    names = list(results["validation"])
    width = max(len(name) for name in names) + 2
    lines.append("")
    lines.append(f"{'split':<12}" + "".join(f"{name:>{width}}" for name in names))
    for split, label in (("validation", "validation"), ("test", "final test")):
        if split in results:
            lines.append(f"{label:<12}" + "".join(f"{results[split][name]:>{width}.4f}" for name in names))
    lines.append(f"model: {results['paths']['model']}")
    return "\n".join(lines)
