"""The pipelines under tf.distribute, each strategy in fresh processes (devices are fixed when TF starts):
MirroredStrategy on two logical CPUs, and MultiWorkerMirroredStrategy with two local workers.

Run as a script, this module is one such process: it reads the tiny stand-in, trains a tiny model a few
steps, evaluates it, and writes what it saw (file names, batch sizes, counts) as JSON for the test to check.
"""

import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import pipelines
from tests.conftest import free_ports
from tests.pipelines.test_tinydata import (
    COLOURS,
    CONFIG,
    COUNTS,
    NAME,
    tiny_data_dir_standin,  # noqa: F401  (fixture)
)

ROOT = pathlib.Path(__file__).parents[2]
BATCH = 4  # per replica
TIMEOUT = 240


def _run_workers(mode: str, data_dir: str, out_dir: pathlib.Path, tf_configs: list[dict | None]) -> list[dict]:
    """Starts one process per TF_CONFIG (None = no cluster) and returns their reports."""
    processes = []
    for index, tf_config in enumerate(tf_configs):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
        env.pop("TF_CONFIG", None)
        if tf_config:
            env["TF_CONFIG"] = json.dumps(tf_config)
        out = out_dir / f"worker{index}.json"
        processes.append((subprocess.Popen([sys.executable, __file__, mode, data_dir, str(out)], cwd=ROOT, env=env,
                                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True), out))
    reports = []
    for process, out in processes:
        log, _ = process.communicate(timeout=TIMEOUT)
        assert process.returncode == 0, log[-3000:]
        reports.append(json.loads(out.read_text()))
    return reports


def _all_names(split: str) -> set[str]:
    return {f"{split}_{family}_{index}_eol-full-size-copy.jpg"
            for family, count in zip(COLOURS, COUNTS[split]) for index in range(count)}


def test_mirrored_strategy_batches_per_replica_and_evaluates_each_example_once(tiny_data_dir_standin,  # noqa: F811
                                                                               tmp_path):
    report, = _run_workers("mirrored", tiny_data_dir_standin, tmp_path, [None])
    assert report["replicas"] == 2
    assert report["train_replica_batch_sizes"] == [BATCH]
    assert report["plain_global_batch_size"] == 2 * BATCH
    assert sorted(report["eval_names"]) == sorted(_all_names("validation"))
    assert set(report["train_names"]) == _all_names("train")
    assert report["run_eval_seen"] == sum(COUNTS["validation"])
    assert report["run_train_global_batch"] == 2 * BATCH
    assert report["keras_eval_seen"] == {"distributed": sum(COUNTS["validation"]),
                                         "plain": sum(COUNTS["validation"])}


def test_features_cached_under_mirrored_equal_one_device_row_for_row(tiny_data_dir_standin, tmp_path):  # noqa: F811
    """A model built under MirroredStrategy fills the feature cache with one row per image, in stored order,
    equal to the same weights on one device (11 validation images: batches of 4, 4 and 3 over 2 replicas)."""
    report, = _run_workers("mirrored", tiny_data_dir_standin, tmp_path, [None])
    features = report["features"]
    assert features["shape"] == [sum(COUNTS["validation"]), 6] and features["labels"] == sum(COUNTS["validation"])
    assert features["same_rows"]
    assert features["max_difference"] <= 1e-5


@pytest.mark.slow
def test_multi_worker_shards_are_disjoint_and_cover_the_split(tiny_data_dir_standin, tmp_path):  # noqa: F811
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    configs = [{"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}} for index in range(2)]
    reports = _run_workers("multiworker", tiny_data_dir_standin, tmp_path, configs)
    assert [report["replicas"] for report in reports] == [2, 2]
    first, second = (set(report["train_names"]) for report in reports)
    assert first and second and not first & second
    assert first | second == _all_names("train")
    eval_names = reports[0]["eval_names"] + reports[1]["eval_names"]
    assert sorted(eval_names) == sorted(_all_names("validation"))
    assert [report["run_eval_seen"] for report in reports] == [sum(COUNTS["validation"])] * 2
    assert [report["run_train_global_batch"] for report in reports] == [2 * BATCH] * 2


def _worker(mode: str, data_dir: str, out_path: str) -> None:
    """One process: the strategy, then the checks' raw material written as JSON."""
    if mode == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        strategy = tf.distribute.MirroredStrategy([device.name for device in tf.config.list_logical_devices("CPU")])
    else:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    cfg = pipelines.InputConfig(data_dir=data_dir, dataset_config=CONFIG, backbone="baseline_cnn", image_size=32,
                                batch_size=BATCH, dataset_name=NAME)

    def local(values):
        return strategy.experimental_local_results(values)

    report = {"replicas": strategy.num_replicas_in_sync, "train_names": [], "eval_names": []}
    train = iter(pipelines.distributed_dataset(strategy, cfg, "train", True, with_file_names=True))
    sizes = set()
    for _ in range(-(-sum(COUNTS["train"]) // BATCH)):  # covers this worker's shard whatever its size
        images, _, names = next(train)
        sizes.update(int(part.shape[0]) for part in local(images))
        report["train_names"] += [name.decode() for part in local(names) for name in part.numpy()]
    report["train_names"] = sorted(set(report["train_names"]))
    report["train_replica_batch_sizes"] = sorted(sizes)
    for _, _, names in pipelines.distributed_dataset(strategy, cfg, "validation", False, with_file_names=True):
        report["eval_names"] += [name.decode() for part in local(names) for name in part.numpy()]

    report["run_eval_seen"] = _examples_seen_by_strategy_run(
        strategy, pipelines.distributed_dataset(strategy, cfg, "validation", False))
    report["run_train_global_batch"] = _examples_seen_by_strategy_run(
        strategy, pipelines.distributed_dataset(strategy, cfg, "train", True), steps=1)
    if mode == "mirrored":
        report["features"] = _features_under_strategy(strategy, cfg, pathlib.Path(out_path).parent / "features")
    if mode == "mirrored":  # Keras 3 fit cannot run under MultiWorkerMirroredStrategy (keras-team/keras#20585)
        plain_train = pipelines.make_dataset(cfg, "train", True, strategy=strategy)
        report["plain_global_batch_size"] = int(plain_train.element_spec[0].shape[0])
        report["keras_eval_seen"] = {
            "distributed": _keras_examples_seen(strategy, pipelines.distributed_dataset(strategy, cfg, "train", True),
                                                pipelines.distributed_dataset(strategy, cfg, "validation", False)),
            "plain": _keras_examples_seen(strategy, plain_train,
                                          pipelines.make_dataset(cfg, "validation", False, strategy=strategy))}
    pathlib.Path(out_path).write_text(json.dumps(report))


def _features_under_strategy(strategy, cfg, cache_dir) -> dict:
    """The feature cache filled by a model built under the strategy, against the same weights on one device."""
    keras.utils.set_random_seed(0)

    def build():
        inputs = keras.Input((32, 32, 3))
        return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(6, 3)(inputs)))

    with strategy.scope():
        replicated = build()
    single = build()
    single.set_weights(replicated.get_weights())
    cached = pipelines.cached_features(replicated, "seeded", cfg, "validation", cache_dir)
    direct = list(pipelines.make_dataset(cfg, "validation", False, with_file_names=True).as_numpy_iterator())
    expected = np.concatenate([single(images).numpy() for images, _, _ in direct])
    same_rows = (np.array_equal(cached.labels["family"], np.concatenate([labels for _, labels, _ in direct]))
                 and np.array_equal(cached.file_names.astype(bytes), np.concatenate([n for _, _, n in direct])))
    aligned = cached.embeddings.shape == expected.shape
    return {"shape": list(cached.embeddings.shape), "labels": len(cached.labels["family"]),
            "same_rows": bool(same_rows),
            "max_difference": float(np.abs(cached.embeddings - expected).max()) if aligned else float("inf")}


def _examples_seen_by_strategy_run(strategy, dataset, steps=None) -> int:
    """Examples in the batches, summed over every replica of every worker by the strategy itself."""

    @tf.function
    def count(batch):
        per_replica = strategy.run(lambda images, labels: tf.shape(labels)[0], args=batch)
        return strategy.reduce("SUM", per_replica, axis=None)

    batches = iter(dataset)
    return sum(int(count(next(batches))) for _ in range(steps)) if steps else sum(int(count(b)) for b in batches)


def _keras_examples_seen(strategy, train_data, eval_data) -> int:
    with strategy.scope():
        inputs = keras.Input((32, 32, 3))
        model = keras.Model(inputs, keras.layers.Dense(202)(keras.layers.GlobalAveragePooling2D()(inputs)))
        model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=[ExamplesSeen()])
    model.fit(train_data, steps_per_epoch=2, epochs=1, verbose=0)
    return int(model.evaluate(eval_data, verbose=0, return_dict=True)["seen"])


class ExamplesSeen(keras.metrics.Metric):
    """Counts evaluated examples (summed over replicas and workers)."""

    def __init__(self, name="seen", **kwargs):
        super().__init__(name=name, **kwargs)
        self.seen = self.add_variable(shape=(), initializer="zeros", name="seen", aggregation="sum")

    def update_state(self, y_true, y_pred, sample_weight=None):
        self.seen.assign_add(keras.ops.cast(keras.ops.shape(y_true)[0], "float32"))

    def result(self):
        return self.seen


if __name__ == "__main__":
    _worker(*sys.argv[1:])
