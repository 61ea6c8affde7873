"""What turns an image into numbers the scores compare: the frozen backbone (through the pipelines'
frozen-feature cache), the colour statistics, and the optional open_clip zero-shot "is this an animal photo".

Each sees the images of the one reading pass through `add(image)` (run.py reads every split once); the backbone
ignores them, because the feature cache reads and embeds the dataset itself, once per weights.
"""

import os
import pathlib

import keras
import numpy as np
import pandas as pd
from PIL import Image

import pipelines
from pipelines import backbones
from trainer.auditing import scores as audit_scores
from trainer.auditing.settings import AuditConfig, AuditError
from trainer.training import models

FEATURES_DIR = "features"
_ZERO_SHOT_ANIMAL_PROMPTS = ("a photo of an animal",)
_ZERO_SHOT_OTHER_PROMPTS = ("a map", "a page of printed text", "a table of museum specimens",
                            "a photo of a person", "a drawing or illustration", "a chart or diagram")


def input_config(config: AuditConfig) -> pipelines.InputConfig:
    """Evaluation input for the backbone at its own input size, read from the audited dataset config."""
    return pipelines.InputConfig.for_backbone(config.backbone, os.path.expanduser(config.data_dir),
                                              config.batch_size, dataset_config=config.dataset_config)


def make(config: AuditConfig) -> "Backbone | ColourStats":
    """The embedder --embedder names, ready before any image is read (unusable weights fail at once)."""
    return Backbone(config) if config.embedder == "backbone" else ColourStats()


def stronger_advice(config: AuditConfig) -> str:
    """What to embed with instead when the out-of-fold head is too weak for its label issues to count."""
    if config.embedder != "backbone" or config.weights == "none":
        return ("embed with pretrained weights: --embedder=backbone --backbone=inceptionv3 --weights=imagenet, or "
                "--weights=PATH of a local .weights.h5 without top")
    return (f"embed with a stronger backbone than {config.backbone} ({config.weights}), e.g. --backbone=convnextbase "
            "or --backbone=inceptionv3 --config=inception_342 with pretrained --weights (imagenet or PATH)")


class ColourStats:
    """Colour and gradient-orientation histograms (audit_scores.colour_embedding) of the images as they are read:
    no network, no second pass."""

    name = "color_stats (colour + gradient-orientation histograms)"

    def __init__(self):
        self._embeddings = []

    def add(self, image: np.ndarray) -> None:
        self._embeddings.append(audit_scores.colour_embedding(image))

    def embeddings(self, table: pd.DataFrame) -> np.ndarray:
        """One row per image added, which is table order."""
        del table
        return np.stack(self._embeddings)


class Backbone:
    """The frozen backbone with global average pooling (what the feature cache runs), its embeddings cached in
    out/features/: a rerun with other thresholds embeds nothing again."""

    def __init__(self, config: AuditConfig):
        self._config = config
        self.name = f"{config.backbone} ({config.weights})"
        self._model = _pooled_backbone(config)

    def add(self, image: np.ndarray) -> None:
        """Nothing: the feature cache reads the images itself."""

    def embeddings(self, table: pd.DataFrame) -> np.ndarray:
        """Pooled embeddings of every image in table order (matched by file name)."""
        config = self._config
        cache_dir = pathlib.Path(config.out).expanduser() / FEATURES_DIR
        rows = {name: i for i, name in enumerate(table["file_name"])}
        embeddings = np.zeros((len(table), self._model.output_shape[-1]), dtype=np.float32)
        weights_id = pipelines.weights_id(config.weights, config.seed)
        for split in table["split"].unique():
            features = pipelines.cached_features(self._model, weights_id, input_config(config), split, cache_dir)
            embeddings[[rows[name] for name in features.file_names]] = features.embeddings
        return embeddings


def _pooled_backbone(config: AuditConfig) -> keras.Model:
    spec = backbones.get_backbone(config.backbone)
    # Random initial weights are only reproducible, and so only cacheable, under a fixed seed.
    keras.utils.set_random_seed(config.seed)
    size = input_config(config).image_size
    try:
        backbone = models.build_backbone(spec, size, os.path.expanduser(config.weights))
    except Exception as exc:  # Keras raises a bare Exception when it cannot download the ImageNet weights.
        raise AuditError(f"--weights={config.weights}: cannot load {spec.name} weights "
                         f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); give a local "
                         ".weights.h5 of the backbone without top, none, or --embedder=color_stats") from None
    return models.build_embedder(spec, backbone, size)


class ZeroShot:
    """P(not an animal photo) from a local open_clip checkpoint (e.g. BioCLIP), by zero-shot prompts, in
    batches of --batch_size as the images are read."""

    def __init__(self, path: str, architecture: str, batch_size: int):
        import open_clip  # optional: settings.validate names the package when it is missing
        import torch

        self._torch = torch
        model, _, self._preprocess = open_clip.create_model_and_transforms(
            architecture, pretrained=os.path.expanduser(path))
        self._model = model.eval()
        prompts = open_clip.get_tokenizer(architecture)([*_ZERO_SHOT_ANIMAL_PROMPTS, *_ZERO_SHOT_OTHER_PROMPTS])
        with torch.no_grad():
            text = self._model.encode_text(prompts)
        self._text = text / text.norm(dim=-1, keepdim=True)
        self._batch_size = batch_size
        self._pending, self._scores = [], []

    def add(self, image: np.ndarray) -> None:
        self._pending.append(image)
        if len(self._pending) == self._batch_size:
            self._score_pending()

    def not_animal(self) -> np.ndarray:
        """One score per image added, in the order added."""
        if self._pending:
            self._score_pending()
        return np.asarray(self._scores)

    def _score_pending(self) -> None:
        torch = self._torch
        batch = torch.stack([self._preprocess(Image.fromarray(image)) for image in self._pending])
        with torch.no_grad():
            features = self._model.encode_image(batch)
            features = features / features.norm(dim=-1, keepdim=True)
            probabilities = (self._model.logit_scale.exp() * features @ self._text.T).softmax(dim=-1)
        self._scores.extend(1.0 - probabilities[:, :len(_ZERO_SHOT_ANIMAL_PROMPTS)].sum(dim=-1).numpy())
        self._pending.clear()
