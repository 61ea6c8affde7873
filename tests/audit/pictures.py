"""Pictures of what the audit should find, drawn with Pillow alone (no TensorFlow), so the tests and
benchmarks/audit_bench.py plant the same problems."""

import numpy as np
from PIL import Image, ImageDraw


def text_page(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """A scanned page: near-white paper with lines of black text."""
    page = Image.new("RGB", (width, height), (250, 250, 246))
    draw = ImageDraw.Draw(page)
    for top in range(8, height - 12, 12):
        draw.text((6, top), "".join(rng.choice(list("abcdefghij klmnopqrstuvwxyz"), 40)), fill=(10, 10, 10))
    return page
