"""What this process loaded of NVIDIA's libraries, asked through their own C APIs (ctypes): the CUDA version
the driver supports, the CUDA runtime's and cuDNN's versions, and each GPU's memory.

TensorFlow says which versions it was built with (tf.sysconfig.get_build_info) but not which it loaded: on a
machine someone else set up, a pip-installed cuDNN of another major version or an old driver shows as a crash
in the first convolution, or as kernels that silently fall back. Call these after TensorFlow has listed its
GPUs (it loads the libraries then); a library not loaded reads as None.
"""

import ctypes
import pathlib
import re

_LIBRARY = {"driver": r"libcuda\.so", "runtime": r"libcudart\.so", "cudnn": r"libcudnn\.so"}


def loaded_path(library: str) -> str | None:
    """The file this process mapped for `library` (driver, runtime or cudnn), from /proc/self/maps."""
    maps = pathlib.Path("/proc/self/maps")
    if not maps.exists():
        return None
    pattern = re.compile(rf"/{_LIBRARY[library]}[.\d]*$")
    return next((line.split()[-1] for line in maps.read_text().splitlines() if pattern.search(line)), None)


def _c_int_result(path: str, function: str, *args) -> int | None:
    """The int a CUDA-style call `status function(..., int *out)` writes, or None when it reports an error."""
    value = ctypes.c_int()
    status = getattr(ctypes.CDLL(path), function)(*args, ctypes.byref(value))
    return value.value if status == 0 else None


def _cuda_version(number: int | None) -> str | None:
    """CUDA's encoding, 1000 * major + 10 * minor (12040 -> 12.4)."""
    return None if number is None else f"{number // 1000}.{number % 1000 // 10}"


def _cudnn_version(number: int) -> str:
    """cuDNN 9 encodes major * 10000 + minor * 100 + patch (90300), cuDNN 8 major * 1000 + minor * 100 + patch."""
    major, rest = (number // 10000, number % 10000) if number >= 90000 else (number // 1000, number % 1000)
    return f"{major}.{rest // 100}.{rest % 100}"


def loaded_versions() -> dict[str, str | None]:
    """{"driver": CUDA version the driver supports, "runtime": CUDA runtime, "cudnn": cuDNN}; None when not
    loaded."""
    paths = {library: loaded_path(library) for library in _LIBRARY}
    versions = {"driver": None, "runtime": None, "cudnn": None}
    if paths["driver"]:
        versions["driver"] = _cuda_version(_c_int_result(paths["driver"], "cuDriverGetVersion"))
    if paths["runtime"]:
        versions["runtime"] = _cuda_version(_c_int_result(paths["runtime"], "cudaRuntimeGetVersion"))
    if paths["cudnn"]:
        cudnn = ctypes.CDLL(paths["cudnn"])
        cudnn.cudnnGetVersion.restype = ctypes.c_size_t
        versions["cudnn"] = _cudnn_version(cudnn.cudnnGetVersion())
    return versions


def total_memory(ordinal: int) -> int | None:
    """Bytes of memory of CUDA device `ordinal` (TensorFlow's GPU:ordinal), from the driver; None if unknown."""
    path = loaded_path("driver")
    if not path:
        return None
    driver = ctypes.CDLL(path)
    device, size = ctypes.c_int(), ctypes.c_size_t()
    if driver.cuInit(0) or driver.cuDeviceGet(ctypes.byref(device), ordinal):
        return None
    return size.value if driver.cuDeviceTotalMem_v2(ctypes.byref(size), device) == 0 else None


def no_gpu_reason(environment: dict) -> str:
    """Why TensorFlow sees no GPU, as far as can be told without one."""
    visible = environment.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return f"CUDA_VISIBLE_DEVICES={visible!r} hides every GPU"
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return "no NVIDIA driver: libcuda.so.1 is not installed"
    return "the NVIDIA driver reports no usable GPU (nvidia-smi shows what it sees)"
