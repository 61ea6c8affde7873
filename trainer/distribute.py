"""Which tf.distribute strategy a run uses, and the learning-rate scaling that follows from its global batch."""

import json
import math
import os

import tensorflow as tf


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
    if name == "multi_worker" or (name == "auto" and _tf_config_has_cluster()):
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    devices = [device.name for device in gpus or tf.config.list_logical_devices("CPU")]
    if name == "mirrored" or (name == "auto" and len(devices) > 1):
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.OneDeviceStrategy(devices[0])


def _tf_config_has_cluster() -> bool:
    return bool(json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster"))


def scaled_learning_rate(learning_rate: float, global_batch_size: int, rule: str,
                         reference_batch_size: int) -> float:
    """The rate for global_batch_size of one given for reference_batch_size (rule: none, linear or sqrt)."""
    ratio = global_batch_size / reference_batch_size
    return learning_rate * {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[rule]
