"""The one decoder against the hostile inputs EOL serves: odd modes, misnamed formats, rotation, huge and broken
files. Every image is generated here, small, so the whole module runs in a few seconds."""

import hashlib
import io
import re
import warnings

import numpy as np
import pytest
from PIL import ExifTags, Image, ImageFile, features

from tfds_rarespecies import imaging
from tfds_rarespecies.imaging import DecodeError, decode_rgb, encode_jpeg, phash_distance, prepare, resize_short_side
from tfds_rarespecies.splits import NEAR_DUPLICATE_MAX_DISTANCE

RED = (255, 0, 0)
WHITE = (255, 255, 255)


def encode(img: Image.Image, fmt: str, **params) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **params)
    return out.getvalue()


def scene(seed: int, size=(256, 192)) -> Image.Image:
    """A photo-like picture: smooth random blobs, so perceptual hashes behave as on real images."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
    return coarse.resize(size, Image.Resampling.BICUBIC)


def assert_close(pixel, expected, tolerance=6):
    assert all(abs(a - b) <= tolerance for a, b in zip(pixel, expected)), (pixel, expected)


def decode_failure(data: bytes) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        decode_rgb(data)
    return info.value


# --- modes -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode, fill, fmt, expected", [
    ("L", 77, "JPEG", (77, 77, 77)),
    ("L", 77, "PNG", (77, 77, 77)),
    ("1", 1, "PNG", WHITE),
    ("CMYK", (0, 255, 255, 0), "JPEG", RED),
    ("RGB", RED, "JPEG", RED),
])
def test_opaque_modes_become_rgb(mode, fill, fmt, expected):
    data = encode(Image.new(mode, (24, 16), fill), fmt)
    img = decode_rgb(data)
    prepared = prepare(data, 16, 95)
    assert img.mode == "RGB" and img.size == (24, 16)
    assert_close(img.getpixel((12, 8)), expected)
    assert (prepared.source_format, prepared.source_mode) == (fmt, mode)


def test_cmyk_jpeg_is_adobe_inverted_and_still_decodes_to_the_right_colour():
    """Pillow writes and reads Adobe's inverted CMYK; a naive decoder would give cyan instead of red."""
    data = encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG")
    assert b"Adobe" in data
    assert_close(decode_rgb(data).getpixel((8, 8)), RED)


def test_palette_png_keeps_palette_colours():
    img = Image.new("P", (16, 8), 1)
    img.putpalette([0, 0, 0, 0, 128, 0, 10, 20, 30] + [0] * 759)
    img.paste(2, (8, 0, 16, 8))
    decoded = decode_rgb(encode(img, "PNG"))
    assert decoded.getpixel((0, 0)) == (0, 128, 0) and decoded.getpixel((15, 7)) == (10, 20, 30)


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_transparency_becomes_white(fmt):
    img = Image.new("P", (16, 8), 1)
    img.putpalette([0, 0, 0, 0, 128, 0] + [0] * 762)
    img.paste(0, (0, 0, 8, 8))
    decoded = decode_rgb(encode(img, fmt, transparency=0))
    assert decoded.getpixel((0, 0)) == WHITE
    assert decoded.getpixel((15, 7)) == (0, 128, 0)


@pytest.mark.parametrize("fmt", ["PNG", pytest.param("WEBP", marks=pytest.mark.skipif(
    not features.check("webp"), reason="this Pillow build has no WebP support"))])
def test_alpha_is_composited_on_white(fmt):
    img = Image.new("RGBA", (16, 8), (*RED, 255))
    img.putpixel((0, 0), (0, 0, 0, 0))
    img.putpixel((1, 0), (0, 0, 0, 128))
    decoded = decode_rgb(encode(img, fmt, lossless=True) if fmt == "WEBP" else encode(img, fmt))
    assert decoded.mode == "RGB"
    assert decoded.getpixel((0, 0)) == WHITE
    assert_close(decoded.getpixel((1, 0)), (127, 127, 127), tolerance=1)
    assert decoded.getpixel((8, 4)) == RED


def test_gray_with_alpha_is_composited_on_white():
    img = Image.new("LA", (8, 8), (0, 255))
    img.putpixel((0, 0), (0, 0))
    decoded = decode_rgb(encode(img, "PNG"))
    assert decoded.getpixel((0, 0)) == WHITE and decoded.getpixel((4, 4)) == (0, 0, 0)


def test_16_bit_grayscale_png_is_scaled_not_clipped():
    """Pillow opens it as I;16 and its own convert("L") clips at 255: mid-gray would come out white."""
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    data = encode(Image.fromarray(values), "PNG")
    assert Image.open(io.BytesIO(data)).convert("L").getpixel((2, 0)) == 255
    decoded = decode_rgb(data)
    assert [decoded.getpixel((x, 0)) for x in range(4)] == [(0, 0, 0), (1, 1, 1), (128, 128, 128), WHITE]
    assert prepare(data, 1, 95).source_mode == "I;16"


def test_16_bit_ppm_opened_as_mode_i_is_scaled():
    data = encode(Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.uint16)), "PPM")
    assert Image.open(io.BytesIO(data)).mode == "I"
    decoded = decode_rgb(data)
    assert [decoded.getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]


@pytest.mark.parametrize("values, expected", [([0.0, 0.5, 1.0], [0, 128, 255]), ([0.0, 100.0, 300.0], [0, 100, 255])])
def test_float_tiff(values, expected):
    decoded = decode_rgb(encode(Image.fromarray(np.array([values], dtype=np.float32)), "TIFF"))
    assert [decoded.getpixel((x, 0))[0] for x in range(3)] == expected


# --- detection by content, frames, orientation -------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "GIF", pytest.param("WEBP", marks=pytest.mark.skipif(
    not features.check("webp"), reason="this Pillow build has no WebP support"))])
def test_format_is_detected_by_content_not_name(tmp_path, fmt):
    path = tmp_path / "12853737_449393_eol-full-size-copy.jpg"
    path.write_bytes(encode(Image.new("RGB", (20, 10), RED), fmt, **({"lossless": True} if fmt == "WEBP" else {})))
    prepared = prepare(path.read_bytes(), 10, 95)
    assert prepared.source_format == fmt and (prepared.width, prepared.height) == (20, 10)
    assert_close(decode_rgb(path.read_bytes()).getpixel((5, 5)), RED)


def test_animated_gif_decodes_its_first_frame():
    frames = [Image.new("RGB", (10, 10), colour) for colour in (RED, (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    assert decode_rgb(data).getpixel((5, 5)) == RED


def marked_jpeg(size, orientation) -> bytes:
    """A gray JPEG with a red block in its stored top-left corner and the given EXIF orientation."""
    img = Image.new("RGB", size, (128, 128, 128))
    img.paste(RED, (0, 0, 8, 8))
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    return encode(img, "JPEG", quality=95, exif=exif.tobytes())


def test_exif_orientation_6_is_applied():
    """Orientation 6 means "rotate 90 degrees clockwise to display": the stored top-left lands top-right."""
    data = marked_jpeg((40, 20), 6)
    decoded = decode_rgb(data)
    assert decoded.size == (20, 40)
    assert_close(decoded.getpixel((17, 2)), RED, tolerance=12)
    assert_close(decoded.getpixel((2, 2)), (128, 128, 128), tolerance=12)
    prepared = prepare(data, 10, 95)
    assert (prepared.width, prepared.height) == (20, 40)
    assert Image.open(io.BytesIO(prepared.jpeg)).size == (10, 20)


def test_stored_jpeg_has_no_orientation_to_apply_twice():
    stored = Image.open(io.BytesIO(prepare(marked_jpeg((40, 20), 6), 10, 95).jpeg))
    assert ExifTags.Base.Orientation not in stored.getexif()


# --- draft decoding of large JPEGs -------------------------------------------------------------------------


def test_large_jpeg_uses_draft_and_reports_full_size():
    data = encode(scene(0, (4000, 3000)), "JPEG", quality=80)
    drafted = decode_rgb(data, min_short_side=342)
    assert drafted.size == (500, 375), "expected Pillow's 1/8 scale, the largest keeping the short side >= 342"
    assert decode_rgb(data).size == (4000, 3000)
    prepared = prepare(data, 342, 90)
    assert (prepared.width, prepared.height) == (4000, 3000)
    assert Image.open(io.BytesIO(prepared.jpeg)).size == (456, 342)


@pytest.mark.parametrize("size, min_short_side, expected", [
    ((1001, 683), 85, (126, 86)), ((683, 1001), 85, (86, 126)), ((800, 600), 75, (100, 75)),
    ((800, 600), 76, (200, 150)), ((800, 600), 151, (400, 300)), ((800, 600), 601, (800, 600)),
])
def test_draft_picks_the_smallest_scale_keeping_min_short_side(size, min_short_side, expected):
    """Pillow decodes JPEGs at 1/1, 1/2, 1/4 or 1/8 scale (rounded up) and picks the smallest that still covers
    the request, so the short side lands in [min, 2 * min) unless the file is smaller or needs more than 1/8."""
    decoded = decode_rgb(encode(Image.new("RGB", size, RED), "JPEG"), min_short_side=min_short_side)
    assert decoded.size == expected
    assert min(decoded.size) >= min(min_short_side, min(size))


def test_draft_with_rotation_reports_rotated_full_size():
    prepared = prepare(marked_jpeg((1600, 1200), 6), 150, 90)
    assert (prepared.width, prepared.height) == (1200, 1600)
    assert Image.open(io.BytesIO(prepared.jpeg)).size == (150, 200)


# --- the bomb guard ----------------------------------------------------------------------------------------


def test_pillow_guard_is_set_to_max_pixels_which_admits_the_largest_eol_file():
    assert Image.MAX_IMAGE_PIXELS == imaging.MAX_PIXELS >= 115_000_000


@pytest.mark.parametrize("size", [(41, 25), (60, 25), (100, 25)],
                         ids=["just_over", "pillow_warns_only", "pillow_raises"])
def test_over_max_pixels_is_too_large_whatever_pillow_does(monkeypatch, size):
    """Pillow only warns between 1x and 2x its limit and raises above; all three must be refused alike."""
    monkeypatch.setattr(imaging, "MAX_PIXELS", 1000)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    data = encode(Image.new("RGB", size), "PNG")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        assert decode_failure(data).reason == "too_large"


def test_exactly_max_pixels_decodes(monkeypatch):
    monkeypatch.setattr(imaging, "MAX_PIXELS", 1000)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    assert decode_rgb(encode(Image.new("RGB", (40, 25)), "PNG")).size == (40, 25)


# --- broken files ------------------------------------------------------------------------------------------


def test_empty_file():
    assert decode_failure(b"").reason == "empty_file"


@pytest.mark.parametrize("data", [b"hello world\n", b"<!DOCTYPE html><html><body>404 Not Found</body></html>"])
def test_text_is_not_an_image_and_the_message_does_not_quote_it(data):
    failure = decode_failure(data)
    assert failure.reason == "not_an_image" and data[:5].decode() not in str(failure)


def test_pillow_messages_lose_the_file_bytes_they_quote(monkeypatch):
    """Some Pillow messages quote bytes of the file (PngImagePlugin: "broken PNG file (chunk b'...')")."""
    def broken(self):
        raise SyntaxError("broken PNG file (chunk b'SECRET\\x00')")

    monkeypatch.setattr(ImageFile.ImageFile, "load", broken)
    failure = decode_failure(encode(scene(1), "PNG"))
    assert (failure.reason, str(failure)) == ("unreadable", "SyntaxError: broken PNG file (chunk ...)")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_file_cut_in_the_middle_is_truncated(fmt):
    data = encode(scene(1), fmt)
    failure = decode_failure(data[: len(data) // 2])
    assert failure.reason == "truncated" and "truncated" in str(failure)


def test_jpeg_cut_inside_its_header_is_truncated():
    data = encode(scene(1), "JPEG")
    assert decode_failure(data[:200]).reason == "truncated"


def test_damaged_header_of_a_real_format_is_unreadable_not_html():
    data = encode(scene(1), "JPEG")
    assert decode_failure(data[:20]).reason == "unreadable"


def test_corrupt_png_data_is_unreadable_with_pillow_message():
    data = bytearray(encode(scene(2), "PNG"))
    start = data.index(b"IDAT") + 4
    data[start:start + 2] = b"\x00\x00"
    failure = decode_failure(bytes(data))
    assert failure.reason == "unreadable" and "broken data stream" in str(failure)


def test_decode_error_reasons_are_the_stable_slugs():
    assert imaging.REASONS == ("empty_file", "not_an_image", "truncated", "too_large", "unreadable", "too_small",
                               "unencodable")
    with pytest.raises(ValueError):
        DecodeError("broken", "a reason outside the list")


# --- resize, encode, prepare, phash ------------------------------------------------------------------------


@pytest.mark.parametrize("size, short_side, expected", [
    ((1000, 333), 100, (300, 100)), ((333, 1000), 100, (100, 300)), ((640, 480), 342, (456, 342)),
    ((500, 500), 128, (128, 128)), ((4001, 2999), 256, (342, 256)),
])
def test_resize_keeps_aspect_ratio(size, short_side, expected):
    resized = resize_short_side(Image.new("RGB", size), short_side)
    assert min(resized.size) == short_side and resized.size == expected
    assert abs(resized.size[0] / resized.size[1] * size[1] - size[0]) <= size[1] / short_side


@pytest.mark.parametrize("size", [(100, 50), (128, 400), (128, 128)])
def test_resize_never_upscales(size):
    img = Image.new("RGB", size)
    assert resize_short_side(img, 128).size == size


def test_encode_jpeg_requires_rgb():
    assert Image.open(io.BytesIO(encode_jpeg(Image.new("RGB", (8, 8)), 90))).mode == "RGB"
    with pytest.raises(ValueError):
        encode_jpeg(Image.new("L", (8, 8)), 90)


def test_prepare_outputs():
    data = encode(scene(3, (300, 200)), "PNG")
    prepared = prepare(data, 128, 90)
    stored = Image.open(io.BytesIO(prepared.jpeg))
    assert (stored.format, stored.mode, stored.size) == ("JPEG", "RGB", (192, 128))
    assert (prepared.width, prepared.height) == (300, 200)
    assert prepared.content_sha256 == hashlib.sha256(data).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{16}", prepared.phash)
    assert (prepared.source_format, prepared.source_mode) == ("PNG", "RGB")


def test_prepare_propagates_decode_errors():
    with pytest.raises(DecodeError) as info:
        prepare(b"<html></html>", 128, 90)
    assert info.value.reason == "not_an_image"


def test_near_copies_have_close_phash_and_different_pictures_do_not():
    original = scene(4, (640, 480))
    copy = Image.open(io.BytesIO(encode(original.resize((500, 375)), "JPEG", quality=60)))
    original_hash = prepare(encode(original, "PNG"), 128, 90).phash
    assert phash_distance(original_hash, prepare(encode(copy, "JPEG"), 128, 90).phash) <= NEAR_DUPLICATE_MAX_DISTANCE
    others = [prepare(encode(scene(seed, (640, 480)), "PNG"), 128, 90).phash for seed in (5, 6, 7)]
    assert min(phash_distance(original_hash, other) for other in others) >= 16


def test_phash_distance_counts_differing_bits():
    assert phash_distance("0123456789abcdef", "0123456789abcdef") == 0
    assert phash_distance("0000000000000000", "ffffffffffffffff") == 64
    assert phash_distance("0000000000000000", "0000000000000013") == 3
    with pytest.raises(ValueError):
        phash_distance("00", "0000")


@pytest.mark.parametrize("size, min_side", [((1, 1), 32), ((31, 400), 32), ((400, 31), 32)])
def test_prepare_refuses_an_image_under_the_minimum_stored_side(size, min_side):
    with pytest.raises(DecodeError) as info:
        prepare(encode(Image.new("RGB", size, (90, 120, 30)), "PNG"), 128, 90, min_side=min_side)
    assert info.value.reason == "too_small" and f"< min_side {min_side}" in str(info.value)


def test_prepare_keeps_an_image_exactly_at_the_minimum():
    prepared = prepare(encode(scene(1, (32, 90)), "PNG"), 128, 90, min_side=32)
    assert Image.open(io.BytesIO(prepared.jpeg)).size == (32, 90)


def test_a_stored_side_longer_than_a_jpeg_holds_is_unencodable_before_resizing():
    """400 x 70,000 (a long strip) stored at short side 342 would be 59,850 px long: it fits; at 128 x 70,000
    it stays 70,000 long (never upscaled), over libjpeg's 65,500."""
    strip = encode(Image.new("L", (128, 70_000), 128), "PNG")
    with pytest.raises(DecodeError) as info:
        prepare(strip, 342, 90, min_side=32)
    assert info.value.reason == "unencodable" and str(imaging.JPEG_MAX_SIDE) in str(info.value)
    assert Image.open(io.BytesIO(prepare(strip, 64, 90).jpeg)).size == (64, 35_000)


def test_an_encoder_refusal_is_a_decode_error_not_a_crash(monkeypatch):
    def refuse(img, quality):
        raise OSError("encoder error -2 when writing image file")

    monkeypatch.setattr(imaging, "encode_jpeg", refuse)
    with pytest.raises(DecodeError) as info:
        prepare(encode(scene(1, (64, 64)), "PNG"), 32, 90)
    assert info.value.reason == "unencodable" and "encoder error" in str(info.value)
