"""TF_CONFIG for a multi-worker run: a cluster MultiWorkerMirroredStrategy can use, this worker's task in it,
its address on this machine with the port free, every host resolvable, and the Keras workaround the trainer
applies for keras-team/keras#20585 still matching this Keras.

Checked before anything starts TensorFlow's server (the doctor never makes the multi-worker strategy), so a
busy port is another process's: typically a worker of an earlier run still alive.
"""

import errno
import json
import os
import socket

from trainer.preflight.report import Result, fail, ok, warn
from trainer.training import distribute
from trainer.training.config import Config

TASK_TYPES = ("chief", "worker")


def split_address(address: str) -> tuple[str, int]:
    """"host:port" or "[v6 address]:port" -> (host, port)."""
    host, _, port = str(address).rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"{address!r} is not host:port")
    return host.strip("[]"), int(port)


def port_problem(host: str, port: int) -> str | None:
    """Why this task cannot listen on host:port, or None. The host is tried on a free port (is it this
    machine's?), then the port on every interface, where TensorFlow's server binds it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family) as probe:
            probe.bind((host, 0))
    except socket.gaierror as error:
        return f"this task's host {host} does not resolve ({error.strerror}): fix its address in TF_CONFIG"
    except OSError as error:
        return f"{host} is not an address of this machine ({error.strerror}): fix task.index or the address"
    try:
        with socket.socket(family) as probe:
            probe.bind(("", port))
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            return (f"port {port} of this task is busy: another process listens on it (a worker of an earlier "
                    "run?): stop it or give this task another port in TF_CONFIG")
        return f"port {port} of this task cannot be used ({error.strerror}): give it another port in TF_CONFIG"
    return None


def _cluster_problem(cluster: dict, task: dict) -> str | None:
    """What keeps MultiWorkerMirroredStrategy from using this cluster and task, or None."""
    unknown = sorted(set(cluster) - set(TASK_TYPES))
    if unknown:
        return f"the cluster has {', '.join(unknown)} tasks: MultiWorkerMirroredStrategy takes chief and worker only"
    task_type, index = task.get("type"), task.get("index")
    tasks = cluster.get(task_type)
    if not isinstance(tasks, list) or not isinstance(index, int) or not 0 <= index < len(tasks):
        sizes = ", ".join(f"{name} x{len(addresses)}" for name, addresses in cluster.items())
        return (f"this task, {task_type}:{index}, is not in the cluster ({sizes}): set task.type to chief or worker "
                "and task.index to one of its tasks")
    for addresses in cluster.values():
        for address in addresses:
            host, _ = split_address(address)
            try:
                socket.getaddrinfo(host, None)
            except socket.gaierror as error:
                return f"{address} in the cluster does not resolve ({error.strerror}): fix the host name"
    return port_problem(*split_address(tasks[index]))


def check(config: Config) -> Result:
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return ok("cluster", "no TF_CONFIG: one machine")
    if not distribute.multi_worker_requested(config.strategy):
        return warn("cluster", f"TF_CONFIG is set but --strategy={config.strategy} trains on this machine alone: "
                               "unset TF_CONFIG, or use --strategy=auto or multi_worker")
    try:
        tf_config = json.loads(raw)
        cluster, task = tf_config.get("cluster") or {}, tf_config.get("task") or {}
        problem = _cluster_problem(cluster, task) if cluster else "TF_CONFIG names no cluster"
    except (ValueError, AttributeError) as error:
        problem = f"TF_CONFIG cannot be read ({error})"
    if problem:
        return fail("cluster", f"{problem} (TF_CONFIG={' '.join(raw.split())[:200]})")
    try:
        distribute.patch_keras_multi_worker()
    except RuntimeError as error:  # this Keras' internals no longer match the keras#20585 workaround
        return fail("cluster", str(error))
    address = cluster[task["type"]][task["index"]]
    workers = sum(len(addresses) for addresses in cluster.values())
    return ok("cluster", f"this task is {task['type']}:{task['index']} of {workers}, at {address} with the port free; "
                         "every host resolves; Keras' multi-worker workaround (keras#20585) applies")
