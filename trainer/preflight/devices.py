"""The strategy the run will use and the devices under it: each GPU's name and memory, or plainly that it is
the CPU; and the flags that strategy cannot run (distribute.check_supported), which depend on the machine.

A multi-worker run (TF_CONFIG) is looked at on this machine only: MultiWorkerMirroredStrategy would wait for
the other workers, so the doctor takes this machine's devices as the trainer's MirroredStrategy would.
"""

import tensorflow as tf

from trainer.preflight import cuda
from trainer.preflight.report import Result, ok, warn
from trainer.training import distribute
from trainer.training.config import Config

GIB = 1 << 30


def local_strategy(config: Config) -> tf.distribute.Strategy:
    """The strategy the run makes (distribute.make_strategy), or for multi-worker this machine's share of it."""
    return distribute.make_strategy("mirrored" if distribute.multi_worker_requested(config.strategy)
                                    else config.strategy)


def describe_gpu(index: int, device: tf.config.PhysicalDevice) -> str:
    details = tf.config.experimental.get_device_details(device)
    memory = cuda.total_memory(index)
    parts = [f"{memory / GIB:.1f} GiB" if memory else "memory unknown"]
    if details.get("compute_capability"):
        parts.append("compute {}.{}".format(*details["compute_capability"]))
    return f"GPU:{index} {details.get('device_name', 'unnamed')} ({', '.join(parts)})"


def check(config: Config, strategy: tf.distribute.Strategy) -> Result:
    distribute.check_supported(strategy, config.jit_compile)
    replicas = strategy.num_replicas_in_sync
    where = f"{distribute.public_name(strategy)}, {replicas} replica{'s' * (replicas > 1)}"
    if distribute.multi_worker_requested(config.strategy):
        where = f"multi-worker (TF_CONFIG); this machine's part as {where}"
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        names = ", ".join(device.rsplit("/", 1)[-1].replace("device:", "") for device in
                          strategy.extended.worker_devices)
        return warn("devices", f"{where} on {names}: CPU only, no GPU: training runs on the CPU, far slower than on "
                               "a GPU (the cuda line says why no GPU is seen)")
    used = len([device for device in strategy.extended.worker_devices if "GPU" in device.upper()])
    message = f"{where} on {'; '.join(describe_gpu(index, gpu) for index, gpu in enumerate(gpus))}"
    if used < len(gpus):
        return warn("devices", f"{message}: the run uses {used} of the {len(gpus)} GPUs; --strategy=auto uses all")
    return ok("devices", message)
