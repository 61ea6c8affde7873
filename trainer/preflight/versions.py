"""The libraries the run stands on: TensorFlow, Keras and TFDS against the versions setup.cfg pins, and the
CUDA and cuDNN TensorFlow was built with against those this process loaded (and whether a convolution runs on
the first GPU, where a broken cuDNN shows)."""

import importlib.metadata
import os

import tensorflow as tf
from packaging.requirements import Requirement

from trainer.preflight import cuda
from trainer.preflight.report import Result, fail, first_line, ok, warn

PROJECT = "rare-species"
PINNED = ("tensorflow", "keras", "tensorflow-datasets")
GPU_INSTALL = "pip install -e '.[gpu]' (TensorFlow with CUDA)"


def check_libraries() -> Result:
    installed = {name: importlib.metadata.version(name) for name in PINNED}
    shown = ", ".join(f"{name} {version}" for name, version in installed.items())
    try:
        requirements = [Requirement(line) for line in importlib.metadata.requires(PROJECT) or ()]
    except importlib.metadata.PackageNotFoundError:
        return warn("versions", f"{shown}; {PROJECT} is not installed, so its pins are unknown: pip install -e .")
    pins = {requirement.name: requirement.specifier for requirement in requirements if requirement.marker is None}
    outside = [f"{name} {installed[name]} is outside {name}{pins[name]}" for name in PINNED
               if name in pins and not pins[name].contains(installed[name], prereleases=True)]
    if outside:
        return fail("versions", f"{'; '.join(outside)}: pip install -e . installs the versions setup.cfg pins")
    return ok("versions", f"{shown} (within setup.cfg's pins)")


def check_cuda() -> Result:
    build = tf.sysconfig.get_build_info()
    if not build.get("is_cuda_build"):
        return warn("cuda", f"TensorFlow {tf.__version__} is built without CUDA, so no GPU can be used: {GPU_INSTALL}")
    built = f"CUDA {build['cuda_version']} and cuDNN {build['cudnn_version']}"
    if not tf.config.list_physical_devices("GPU"):
        return warn("cuda", f"TensorFlow was built with {built} but sees no GPU ({cuda.no_gpu_reason(os.environ)}): "
                            "training runs on the CPU")
    try:
        with tf.device("/GPU:0"):
            tf.nn.conv2d(tf.ones([1, 8, 8, 3]), tf.ones([3, 3, 3, 4]), 1, "SAME").numpy()
    except Exception as error:  # what a missing or mismatched cuDNN raises varies with the release
        return fail("cuda", f"a convolution on GPU:0 failed ({first_line(error)}); TensorFlow was built with "
                            f"{built}: install the matching NVIDIA libraries, {GPU_INSTALL}")
    loaded = cuda.loaded_versions()
    shown = ", ".join(f"{name} {version or 'not loaded'}" for name, version in loaded.items())
    failures, warnings = library_mismatches(build, loaded)
    message = f"built with {built}; loaded: {shown}"
    if failures:
        return fail("cuda", f"{message}: {'; '.join(failures + warnings)}")
    if warnings:
        return warn("cuda", f"{message}: {'; '.join(warnings)}")
    return ok("cuda", f"{message}; a convolution ran on GPU:0")


def _major_minor(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".")[:2])


def library_mismatches(build: dict, loaded: dict[str, str | None]) -> tuple[list[str], list[str]]:
    """(failures, warnings) between the versions TensorFlow was built with and those loaded (CUDA's rules: a
    driver serves runtimes up to its own version, a newer minor with minor-version compatibility only, and
    cuDNN must keep its major version)."""
    failures, warnings = [], []
    built_cuda = _major_minor(build["cuda_version"])
    if loaded["driver"] and _major_minor(loaded["driver"])[0] < built_cuda[0]:
        failures.append(f"the driver supports CUDA {loaded['driver']}, older than the {built_cuda[0]}.x TensorFlow "
                        "needs: update the NVIDIA driver")
    elif loaded["driver"] and _major_minor(loaded["driver"]) < built_cuda:
        warnings.append(f"the driver supports CUDA {loaded['driver']}, older than {build['cuda_version']} (minor "
                        "version compatibility only: kernels compiled just in time can fail): update the driver")
    if loaded["runtime"] and _major_minor(loaded["runtime"])[0] != built_cuda[0]:
        failures.append(f"CUDA runtime {loaded['runtime']} loaded for a TensorFlow built with "
                        f"{build['cuda_version']}: {GPU_INSTALL}")
    if loaded["cudnn"] and loaded["cudnn"].split(".")[0] != str(build["cudnn_version"]).split(".")[0]:
        failures.append(f"cuDNN {loaded['cudnn']} loaded for a TensorFlow built with cuDNN {build['cudnn_version']}: "
                        f"{GPU_INSTALL}")
    return failures, warnings
