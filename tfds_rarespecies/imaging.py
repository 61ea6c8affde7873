"""The one decoder: every image the project reads (builder, `predict`, image audit) goes through this module.

EOL full-size files are hostile input: some exceed 100 megapixels, some are grayscale, CMYK, palette, 16-bit or
carry transparency, some are PNG/GIF/WebP behind a `.jpg` name, a few are broken. Decoding them in one place
means every consumer sees the same RGB pixels (same orientation, same background under transparency, same
8-bit scaling) and every unusable file fails with the same `DecodeError.reason`.
"""

import dataclasses
import hashlib
import io
import re
from typing import NamedTuple

import imagehash
import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

# The largest EOL Rare Species file is 115 MP; Pillow's default guard (~89.5 MP) would warn on it. 300 MP keeps
# ~2.6x headroom for new downloads while refusing absurd canvases (a 300 MP RGB image is ~900 MB decoded) and
# decompression bombs. Pillow itself only warns between 1x and 2x its limit, so `_decode` also compares every
# image's size against this bound before decoding pixels, which makes the refusal consistent.
MAX_PIXELS = 300_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS

# The file name endings of the formats the decoder reads: the catalog finds a download's images and predict a
# folder's photos by them.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".tif", ".tiff", ".bmp")

REASONS = ("empty_file", "not_an_image", "truncated", "too_large", "unreadable", "too_small", "unencodable")

# libjpeg's JPEG_MAX_DIMENSION: the longest side a JPEG can hold. A long, thin image resized to a config's short
# side can exceed it (a 1x10,000 strip at 342 px would be 3.4 million px long), so prepare() refuses such an
# image before resizing it, instead of allocating the strip and failing in the encoder.
JPEG_MAX_SIDE = 65_500

# Files that start like an image but that Pillow cannot identify are damaged images, not error pages.
_IMAGE_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"II*\x00", b"MM\x00*", b"BM")
_SIXTEEN_BIT_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")
_WHITE = (255, 255, 255, 255)
# A quoted literal in an exception message, as repr() writes bytes or text: b'\x89PN', 'abc', "it's".
_QUOTED = re.compile(r"b?'(?:[^'\\]|\\.)*'" r'|b?"(?:[^"\\]|\\.)*"')


class DecodeError(Exception):
    """A file that cannot become an RGB image; .reason is a short stable slug (one of REASONS), str() the detail."""

    def __init__(self, reason: str, message: str):
        if reason not in REASONS:
            raise ValueError(f"unknown decode failure reason {reason!r}")
        super().__init__(message)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class Prepared:
    """One stored example's image and the facts about its source file."""

    jpeg: bytes
    width: int
    height: int
    content_sha256: str
    phash: str
    source_format: str
    source_mode: str


class _Decoded(NamedTuple):
    image: Image.Image
    width: int
    height: int
    source_format: str
    source_mode: str


def decode_rgb(data: bytes, min_short_side: int | None = None) -> Image.Image:
    """Decodes any supported bytes to an RGB image with EXIF orientation applied.

    With min_short_side, JPEGs are decoded at a reduced scale (Image.draft) whose short side is still at least
    min_short_side, which makes huge files cheap; other formats are decoded at full size.
    Raises DecodeError.
    """
    return _decode(data, min_short_side).image


def stored_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) of an image resized to the given short side, aspect kept; never upscaled."""
    if short_side <= 0:
        raise ValueError(f"short_side must be positive, got {short_side}")
    if min(width, height) <= short_side:
        return width, height
    if width <= height:
        return short_side, max(1, round(height * short_side / width))
    return max(1, round(width * short_side / height)), short_side


def resize_short_side(img: Image.Image, short_side: int) -> Image.Image:
    """Aspect-preserving resize to the given short side; smaller images are returned as is (never upscaled)."""
    size = stored_size(*img.size, short_side)
    if size == img.size:
        return img
    # reducing_gap first shrinks by an integer box filter, so full-size non-JPEG inputs stay fast; at 3.0 the
    # result is indistinguishable from a plain resize. Bicubic rather than Lanczos: JPEGs arrive here draft-
    # decoded, less than 2x above the target, where the two agree to ~48 dB PSNR (measured on a real photo:
    # invisible) and bicubic takes 4 ms instead of 6 for an EOL-sized file, the build's largest per-file step.
    return img.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)


def encode_jpeg(img: Image.Image, quality: int) -> bytes:
    """Baseline RGB JPEG without EXIF, so no viewer rotates the already upright pixels a second time."""
    if img.mode != "RGB":
        raise ValueError(f"encode_jpeg expects an RGB image (decode_rgb's output), got mode {img.mode}")
    out = io.BytesIO()
    img.save(out, "JPEG", quality=quality)
    return out.getvalue()


def prepare(data: bytes, short_side: int, quality: int, min_side: int = 1) -> Prepared:
    """The builder's per-file step: hash the bytes, decode (draft to >= short_side), resize, encode, phash.

    Every way one image can fail is a DecodeError, encoding included: a stored short side under min_side
    ("too_small": consumers are tested down to the config's minimum, not below), a stored side longer than a
    JPEG holds, or any other encoder refusal ("unencodable").

    The perceptual hash is taken of the resized image (the stored picture), not of the decoded one: it shrinks
    to 32x32 either way, and from the resized image that costs a sixth (0.8 ms instead of 5 ms per EOL-sized
    file, which made it the largest step after the resize); the two hashes differ by 0-2 of 64 bits.
    """
    decoded = _decode(data, min_short_side=short_side)
    stored = min(decoded.width, decoded.height, short_side)
    if stored < min_side:
        raise DecodeError("too_small", f"{decoded.width}x{decoded.height}: stored short side {stored} px < "
                                       f"min_side {min_side}")
    size = stored_size(*decoded.image.size, short_side)
    if max(size) > JPEG_MAX_SIDE:
        raise DecodeError("unencodable", f"{decoded.width}x{decoded.height} stored as {size[0]}x{size[1]}: a "
                                         f"JPEG side holds at most {JPEG_MAX_SIDE} px")
    resized = resize_short_side(decoded.image, short_side)
    try:
        jpeg = encode_jpeg(resized, quality)
    except OSError as exc:  # Pillow's encoder errors; the message is Pillow's words, not the file's bytes
        raise DecodeError("unencodable", f"the JPEG encoder refused {size[0]}x{size[1]} ({exc})") from exc
    return Prepared(
        jpeg=jpeg,
        width=decoded.width,
        height=decoded.height,
        content_sha256=hashlib.sha256(data).hexdigest(),
        phash=str(imagehash.phash(resized)),
        source_format=decoded.source_format,
        source_mode=decoded.source_mode,
    )


def phash_distance(a: str, b: str) -> int:
    """Number of differing bits between two perceptual hashes given as hex strings of equal length."""
    if len(a) != len(b):
        raise ValueError(f"phash lengths differ: {a!r} vs {b!r}")
    return (int(a, 16) ^ int(b, 16)).bit_count()


def _decode(data: bytes, min_short_side: int | None) -> _Decoded:
    if min_short_side is not None and min_short_side <= 0:
        raise ValueError(f"min_short_side must be positive, got {min_short_side}")
    if not data:
        raise DecodeError("empty_file", "the file has 0 bytes")
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        if data.startswith(_IMAGE_SIGNATURES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP"):
            message = "starts like an image but Pillow cannot identify it (damaged or cut-off header)"
            raise DecodeError("unreadable", message) from exc
        raise DecodeError("not_an_image", f"no image format recognised in the file's {len(data)} bytes") from exc
    except Exception as exc:
        raise _failure(exc) from exc
    # No `with img:`: closing would invalidate the opened image, which is returned as is when already RGB
    # (a BytesIO holds no OS resource).
    width, height = img.size
    if width * height > MAX_PIXELS:
        raise DecodeError("too_large", f"{width}x{height} = {width * height} pixels > MAX_PIXELS {MAX_PIXELS}")
    source_format, source_mode = img.format or "", img.mode
    try:
        if min_short_side is not None and source_format in ("JPEG", "MPO"):
            img.draft("RGB", (min_short_side, min_short_side))
        img.load()
        if img.getexif().get(ExifTags.Base.Orientation) in (5, 6, 7, 8):
            width, height = height, width
        ImageOps.exif_transpose(img, in_place=True)
        rgb = _to_rgb(img)
    except Exception as exc:
        raise _failure(exc) from exc
    return _Decoded(rgb, width, height, source_format, source_mode)


def _failure(exc: Exception) -> DecodeError:
    """Pillow has no exception type for a cut-off file, only messages ("image file is truncated", "Truncated
    File Read"); everything else it raises while reading is "unreadable", with Pillow's message minus what
    it quotes: some messages quote bytes of the file (a PNG chunk name, a TIFF header), and a message must
    never carry the file's contents (it ends in the build report and on the console)."""
    message = f"{type(exc).__name__}: {_QUOTED.sub('...', str(exc))}"
    if isinstance(exc, Image.DecompressionBombError):
        return DecodeError("too_large", message)
    if "truncated" in str(exc).lower():
        return DecodeError("truncated", message)
    return DecodeError("unreadable", message)


def _to_rgb(img: Image.Image) -> Image.Image:
    """Transparency is flattened on white, the background EOL pages show cut-out specimens on; a plain
    convert("RGB") drops alpha and exposes whatever colour transparent pixels store, usually black."""
    if img.mode in _SIXTEEN_BIT_MODES:
        img = _sixteen_bit_to_l(img)
    elif img.mode == "F":
        img = _float_to_l(img)
    if img.has_transparency_data:
        background = Image.new("RGBA", img.size, _WHITE)
        return Image.alpha_composite(background, img.convert("RGBA")).convert("RGB")
    # convert() would copy an image that is already RGB: 345 MB for a 115 MP file decoded at full size.
    return img if img.mode == "RGB" else img.convert("RGB")


def _sixteen_bit_to_l(img: Image.Image) -> Image.Image:
    """Pillow's own convert("L") clips 16-bit values at 255 (so mid-gray 32768 turns white); scale 0..65535 to
    0..255 instead, rounding to nearest ((v + 128) // 257 == round(v / 257) for integers). Mode "I" (how Pillow
    reads 16-bit PPM/PGM, for instance) is assumed to hold 16-bit values; anything outside is clipped."""
    values = np.clip(np.asarray(img), 0, 65535).astype(np.uint32)
    return Image.fromarray(((values + 128) // 257).astype(np.uint8))


def _float_to_l(img: Image.Image) -> Image.Image:
    """Float images come as 0..1 (the usual scientific convention) or as Pillow's 0..255 scale (what
    convert("F") of an 8-bit image gives); a 0..1 image would otherwise decode black."""
    values = np.nan_to_num(np.asarray(img, dtype=np.float32))
    if values.size and values.min() >= 0 and values.max() <= 1:
        values = values * 255
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))
