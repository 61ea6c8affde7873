"""The order the doctor's checks run in, each result yielded as soon as it is known (the parity check takes
a while): the libraries, the devices, the data and weights, the run directory, the services, then parity and
throughput (whether the input feeds the steps).

The CPU is split first (--cpu_devices), as train.run does, before anything starts TensorFlow's runtime.
"""

from collections.abc import Iterator

import tensorflow as tf

from trainer.preflight import cluster, data, devices, model_dir, parity, throughput, tuner_storage, versions, weights
from trainer.preflight.report import FAIL, OK, Result, fail, first_line, guarded, warn
from trainer.preflight.settings import DoctorSettings
from trainer.training import distribute
from trainer.training.config import Config


def _strategy(config: Config) -> tuple[tf.distribute.Strategy | None, Result]:
    try:
        strategy = devices.local_strategy(config)
    except Exception as error:  # e.g. devices TensorFlow lists but cannot open
        return None, fail("devices", f"the strategy could not be made ({first_line(error)})")
    return strategy, guarded("devices", devices.check, config, strategy)


def _parity(config: Config, settings: DoctorSettings, strategy: tf.distribute.Strategy | None,
            devices_result: Result, weights_result: Result) -> Result:
    """Runs when the run could start: the strategy accepts the flags and the weights load. Weights Keras would
    first have to download are replaced by random ones (the same on both sides)."""
    if settings.skip_parity:
        return warn("parity", "not run (--skip_parity): whether several replicas train as one device is unchecked")
    blocked = [result.check for result in (devices_result, weights_result) if result.status == FAIL]
    if strategy is None or blocked:
        return warn("parity", f"not run: fix the {' and '.join(blocked)} FAIL above first")
    start_from = config.weights if weights_result.status == OK else "none"
    return guarded("parity", parity.check, config, strategy, settings.parity_steps, settings.parity_batch_size,
                   start_from)


def _throughput(config: Config, settings: DoctorSettings, strategy: tf.distribute.Strategy | None,
                devices_result: Result, dataset_result: Result) -> Result:
    """Runs when the strategy exists and the dataset is built; the model starts from random weights (its speed
    does not depend on them)."""
    if settings.skip_throughput:
        return warn("throughput", "not run (--skip_throughput): whether the input feeds the steps is unchecked")
    blocked = [result.check for result in (devices_result, dataset_result) if result.status == FAIL]
    if strategy is None or blocked:
        return warn("throughput", f"not run: fix the {' and '.join(blocked)} FAIL above first")
    return guarded("throughput", throughput.check, config, strategy,
                   throughput.Budget(settings.throughput_seconds, settings.throughput_steps))


def run_checks(config: Config, settings: DoctorSettings) -> Iterator[Result]:
    distribute.split_cpu(config.cpu_devices)
    yield guarded("versions", versions.check_libraries)
    yield guarded("cuda", versions.check_cuda)
    strategy, devices_result = _strategy(config)
    yield devices_result
    dataset_result = guarded("dataset", data.check_dataset, config)
    yield dataset_result
    weights_result = guarded("weights", weights.check_weights, config)
    yield weights_result
    yield guarded("model_dir", model_dir.check, config)
    yield guarded("storage", tuner_storage.check, settings.storage)
    yield guarded("cluster", cluster.check, config)
    yield _parity(config, settings, strategy, devices_result, weights_result)
    yield _throughput(config, settings, strategy, devices_result, dataset_result)
