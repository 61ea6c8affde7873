"""The backbone's initial weights: for --weights=imagenet the file Keras keeps in its cache (present, with the
hash Keras expects, loading into the backbone), for a weights file that it loads into the run's backbone;
--weights=none needs nothing.

Where Keras caches an application's weights is its own business: `imagenet_file` builds the application with
weights="imagenet" while Keras' get_file only reports the file it would fetch, so the name, cache directory
and hash are Keras' own and nothing is downloaded.
"""

import os
import unittest.mock
import warnings

import keras
from keras.src.backend import config as keras_config
from keras.src.utils import file_utils

from pipelines import backbones
from trainer.preflight.report import Result, fail, first_line, ok, warn
from trainer.training import models
from trainer.training.config import Config

MIB = 1 << 20


class _Located(Exception):
    """Raised by the stand-in get_file to stop the application build once the file is known."""

    def __init__(self, path: str, file_hash: str | None):
        super().__init__(path)
        self.path, self.file_hash = path, file_hash


def _locate(fname, origin=None, cache_subdir="datasets", file_hash=None, cache_dir=None, **unused):
    """keras.utils.get_file's choice of path (including its fallback when the cache is not writable)."""
    base = os.path.expanduser(cache_dir or keras_config.keras_home())
    if not os.access(base, os.W_OK):
        base = os.path.join("/tmp", ".keras")
    raise _Located(os.path.join(base, cache_subdir, fname), file_hash)


def imagenet_file(spec: backbones.Backbone, size: int) -> tuple[str, str | None]:
    """(path, hash or None) of the ImageNet weights Keras would load for the backbone without top at this size."""
    constructor = getattr(keras.applications, spec.application)
    with unittest.mock.patch.object(file_utils, "get_file", _locate), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. MobileNetV2's note that other sizes load its 224-px weights
        try:
            constructor(include_top=False, weights="imagenet", input_shape=(size, size, 3))
        except _Located as located:
            return located.path, located.file_hash
    raise RuntimeError(f"keras.applications.{spec.application} asked for no weights file")


def _check_imagenet(spec: backbones.Backbone, size: int) -> Result:
    """A file whose hash Keras knows and does not match is fetched again by Keras at start; one without a hash
    (MobileNetV2's) is loaded as it is, so the check loads it too."""
    path, file_hash = imagenet_file(spec, size)
    fetch = f"python -c 'import keras; keras.applications.{spec.application}(include_top=False)'"
    if not os.path.isfile(path):
        return warn("weights", f"imagenet: {path} is not in Keras' cache: trainer.main downloads it at start (needs "
                               f"internet access); to fetch it now: {fetch}")
    if file_hash and not file_utils.validate_file(path, file_hash):
        return warn("weights", f"imagenet: {path} does not have the hash Keras expects (a torn download?): "
                               f"trainer.main downloads it again at start; to do it now delete it and run {fetch}")
    problem = _load_problem(spec, size, "imagenet")
    if problem:
        return fail("weights", f"imagenet: {path} does not load into {spec.name} ({problem}): delete it and run "
                               f"{fetch}")
    checked = "hash as Keras expects" if file_hash else "Keras keeps no hash for it"
    return ok("weights", f"imagenet: {path} ({os.path.getsize(path) / MIB:.0f} MiB, {checked}), loads into {spec.name}")


def _load_problem(spec: backbones.Backbone, size: int, weights: str) -> str | None:
    """Why the backbone cannot be built with these weights, or None."""
    try:
        with warnings.catch_warnings():  # Keras warns about each part it skips; the FAIL line says it all
            warnings.simplefilter("ignore")
            models.build_backbone(spec, size, weights)
    except Exception as error:  # Keras' h5 and .weights.h5 loaders raise ValueError, OSError, KeyError...
        return first_line(error)
    return None


def check_weights(config: Config) -> Result:
    spec, weights = config.backbone_spec, config.weights
    problem = backbones.weights_problem(spec, weights)
    if problem:
        return fail("weights", problem)
    if weights == "none":
        return ok("weights", f"none: {spec.name} starts from random weights")
    if weights == "pretrained" and spec.hub:
        return warn("weights", f"pretrained: trainer.main downloads the keras-hub preset {spec.hub.preset} at start "
                               "(needs network); offline, pass a saved preset directory (docs/train.md)")
    if weights in ("imagenet", "pretrained"):
        return _check_imagenet(spec, config.input_size)
    problem = _load_problem(spec, config.input_size, weights)
    if problem:
        return fail("weights", f"--weights={weights} does not load into {spec.name} ({problem}): give the weights "
                               f"of {spec.name} without top (include_top=False), imagenet or none")
    return ok("weights", f"{weights}: loads into {spec.name}")
