"""Which tf.distribute strategy a run uses, the learning-rate scaling that follows from its global batch, and
what several workers of one MultiWorkerMirroredStrategy run need to stay in step: which one is the chief,
agreeing on the chief's values, and the Keras workaround that lets them fit at all (keras-team/keras#20585)."""

import importlib
import inspect
import json
import math
import os
from collections.abc import Sequence

import keras
import tensorflow as tf

import pipelines
from trainer.training.config import ConfigError


def split_cpu(devices: int) -> None:
    """Splits the CPU into `devices` logical devices, so mirrored training can be tested without GPUs.

    Must run before TensorFlow initialises its devices (before the first tensor is made).
    """
    if devices <= 0:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * devices)
    except RuntimeError:
        if len(tf.config.list_logical_devices("CPU")) != devices:
            raise RuntimeError(f"--cpu_devices={devices}: TensorFlow was initialised before the CPU could be "
                               "split; run in a fresh process") from None


def make_strategy(name: str) -> tf.distribute.Strategy:
    """auto: multi_worker when TF_CONFIG names a cluster, mirrored over several GPUs (or logical CPUs), else
    one device. Multi-worker is decided before anything lists devices: that would start TensorFlow's runtime,
    after which collective ops can no longer be configured."""
    if multi_worker_requested(name):
        patch_keras_multi_worker()
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    devices = [device.name for device in gpus or tf.config.list_logical_devices("CPU")]
    if name == "mirrored" or (name == "auto" and len(devices) > 1):
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.OneDeviceStrategy(devices[0])


def check_supported(strategy: tf.distribute.Strategy, jit_compile: bool) -> None:
    """Refuses, in one ConfigError line before anything is written, a flag the strategy cannot run: XLA-compiled
    steps (--jit_compile) under several replicas fail in their first step, reading a variable another replica
    holds (tensorflow.org/xla/known_issues; with mixed_float16 on GPUs too, keras-team/keras#21366). Keras'
    own jit_compile="auto" turns XLA off under any tf.distribute strategy for the same reason. Checked once the
    strategy exists, since --strategy=auto becomes mirrored only on a machine with several GPUs."""
    replicas = strategy.num_replicas_in_sync
    if jit_compile and replicas > 1:
        raise ConfigError(f"--jit_compile under {public_name(strategy)} with {replicas} replicas: XLA-compiled "
                          "steps cannot read the variables other replicas hold; use --nojit_compile (or "
                          "--strategy=one_device to compile on one device)")


def multi_worker_requested(name: str) -> bool:
    """Whether make_strategy(name) makes a MultiWorkerMirroredStrategy; known before it blocks waiting for
    the cluster's other tasks."""
    return name == "multi_worker" or (name == "auto" and _tf_config_has_cluster())


def _tf_config_has_cluster() -> bool:
    raw = os.environ.get("TF_CONFIG") or "{}"
    try:
        tf_config = json.loads(raw)
        return bool(tf_config.get("cluster"))
    except (ValueError, AttributeError) as error:
        raise ConfigError(f"TF_CONFIG={' '.join(raw.split())[:120]} cannot be read ({error}): give it a JSON "
                          "object with cluster and task, or unset it; `python -m trainer.doctor` checks it") from None


def scaled_learning_rate(learning_rate: float, global_batch_size: int, rule: str,
                         reference_batch_size: int) -> float:
    """The rate for global_batch_size of one given for reference_batch_size (rule: none, linear or sqrt)."""
    ratio = global_batch_size / reference_batch_size
    return learning_rate * {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[rule]


def public_name(strategy: tf.distribute.Strategy) -> str:
    """The name tf.distribute exports the strategy under (MultiWorkerMirroredStrategy's class is
    CollectiveAllReduceStrategy)."""
    exported = [name for name in ("MultiWorkerMirroredStrategy", "MirroredStrategy", "OneDeviceStrategy",
                                  "TPUStrategy", "ParameterServerStrategy")
                if type(strategy) is getattr(tf.distribute, name, None)]
    return exported[0] if exported else type(strategy).__name__


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run's files: always on one machine; under MultiWorkerMirroredStrategy
    the task of type chief, or worker 0 when the cluster has no chief."""
    return strategy.extended.should_checkpoint


def task_id(strategy: tf.distribute.Strategy) -> int:
    resolver = getattr(strategy, "cluster_resolver", None)
    return int(getattr(resolver, "task_id", None) or 0)


def agree(strategy: tf.distribute.Strategy, values: Sequence[float | int | bool | None]) -> list[float | None]:
    """The values of the process holding replica 0 (the chief: MultiWorkerMirroredStrategy numbers its devices
    first), on every worker; the values themselves on one machine.

    A collective op, so every worker must call it at the same point: it is also a barrier, after which every
    file the chief wrote before calling it is complete for the other workers to read. Decisions that decide
    which collective ops run next (skip a phase, save a checkpoint) must be agreed this way, never read from
    the shared files independently, or the workers could diverge and wait on each other forever.
    None travels as NaN and comes back as None.
    """
    if pipelines.num_workers(strategy) == 1:
        return [None if value is None else float(value) for value in values]
    local = tf.constant([math.nan if value is None else float(value) for value in values], tf.float64)
    chief_only = strategy.experimental_distribute_values_from_function(
        lambda context: local if context.replica_id_in_sync_group == 0 else tf.zeros_like(local))
    total = strategy.reduce(tf.distribute.ReduceOp.SUM, chief_only, axis=None).numpy()
    return [None if math.isnan(value) else float(value) for value in total]


def barrier(strategy: tf.distribute.Strategy) -> None:
    """Returns on each worker once every worker has called it (nothing to wait for on one machine)."""
    agree(strategy, [0])


_KERAS_TF_TRAINER = "keras.src.backend.tensorflow.trainer"
_PATCHED = "_rare_species_multi_worker_workaround"


def patch_keras_multi_worker() -> None:
    """Lets Keras 3 fit and evaluate under MultiWorkerMirroredStrategy: works around keras-team/keras#20585.

    Keras (3.15, TF backend) reduces two things across workers that collective all-reduce cannot take:
    1. TensorFlowTrainer._maybe_symbolic_build(iterator=...) builds the model from the first batch averaged
       over the replicas, strategy.reduce("MEAN", (x, y) of PerReplica, axis=None): a nested structure fails
       ("Attempt to convert a value (PerReplica...) to a Tensor"). The build only needs shapes and dtypes,
       so the patch builds from the first local replica's batch instead (data_batch=).
    2. reduce_per_replica(..., reduction="auto") averages each step's logs with strategy.reduce("MEAN", v,
       axis=0), which fails on the scalar metric results; the patch reduces each value with axis=None (the
       mean over all replicas of all workers). Epoch logs are unaffected: Keras reads them from the metric
       variables, which tf.distribute sums over every worker.
    Both patched functions change nothing unless the strategy is multi-worker, so patching the module once
    is harmless to other runs in the same process; calling this again does nothing. A Keras whose internals
    no longer match fails here with one RuntimeError line rather than somewhere inside fit.
    Remove this (and its call in make_strategy) once Keras fixes #20585.
    """
    trainer = importlib.import_module(_KERAS_TF_TRAINER)
    _check_keras_internals(trainer)
    if getattr(trainer.reduce_per_replica, _PATCHED, False):
        return
    tree = trainer.tree
    original_reduce, original_build = trainer.reduce_per_replica, trainer.TensorFlowTrainer._maybe_symbolic_build

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and trainer._collective_all_reduce_multi_worker(strategy):
            return tree.map_structure(
                lambda value: strategy.reduce("MEAN", value, axis=None)
                if isinstance(value, (tf.Tensor, tf.distribute.DistributedValues)) else value, values)
        return original_reduce(values, strategy, reduction)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self._distribute_strategy
        if iterator is not None and strategy is not None and trainer._collective_all_reduce_multi_worker(strategy):
            for _, _, batches in iterator:
                data_batch = tree.map_structure(lambda value: strategy.experimental_local_results(value)[0],
                                                next(batches))
                break
            iterator = None
        return original_build(self, iterator=iterator, data_batch=data_batch)

    setattr(reduce_per_replica, _PATCHED, True)
    trainer.reduce_per_replica = reduce_per_replica
    trainer.TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build


def _check_keras_internals(trainer) -> None:
    """The names and signatures patch_keras_multi_worker relies on, or one line saying what changed."""
    expected = {"TensorFlowTrainer._maybe_symbolic_build": ["self", "iterator", "data_batch"],
                "reduce_per_replica": ["values", "strategy", "reduction"],
                "_collective_all_reduce_multi_worker": ["strategy"]}
    for name, parameters in expected.items():
        target = trainer
        for part in name.split("."):
            target = getattr(target, part, None)
        found = list(inspect.signature(target).parameters) if callable(target) else None
        if found != parameters:
            shown = "missing" if found is None else f"({', '.join(found)})"
            raise RuntimeError(f"Keras {keras.__version__}: {_KERAS_TF_TRAINER}.{name} is {shown}, not "
                               f"({', '.join(parameters)}); update or remove patch_keras_multi_worker in "
                               "trainer/training/distribute.py (keras-team/keras#20585 workaround)")
    if not hasattr(trainer, "tree"):
        raise RuntimeError(f"Keras {keras.__version__}: {_KERAS_TF_TRAINER} no longer imports tree; update or "
                           "remove patch_keras_multi_worker in trainer/training/distribute.py (keras-team/keras#20585)")
