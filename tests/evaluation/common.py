"""Helpers the evaluation room's tests share (fixtures are in conftest.py)."""

import numpy as np

GOOD_FILES = ("cmyk.jpg", "gray.jpg", "photo.jpg", "sub/png_named.jpg")  # photo_folder's decodable files


def pattern(height: int, width: int, seed: int) -> np.ndarray:
    """Seeded uint8 RGB noise of the given size."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
