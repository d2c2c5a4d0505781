"""Image decoding: every PIL mode, EXIF rotation, bad files, resize geometry, JPEG draft."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile, JpegImagePlugin

from deepfake_workflow.errors import DataError
from deepfake_workflow.imageio import (
    RESIZE_MODES,
    ImageReadError,
    load_rgb,
    load_rgb_and_size,
)

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def _png_bytes(width: int, height: int, bit_depth: int, colour_type: int, idat: bytes) -> bytes:
    """A PNG written by hand, so headers can claim sizes PIL never has to allocate."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(idat))
        + chunk(b"IEND", b"")
    )


def _noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _smooth(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Natural-looking content: low-resolution noise upscaled (what draft must keep)."""
    small = Image.fromarray(_noise(max(2, height // 16), max(2, width // 16), seed))
    return np.asarray(small.resize((width, height), Image.Resampling.BICUBIC))


def _native(path: Path, size: int = 16) -> np.ndarray:
    """Exact pixels (no resampling) so colour conversions can be checked exactly."""
    return load_rgb(path, size, "native_crop")


# --------------------------------------------------------------------------- modes


def test_grey_l(tmp_path):
    p = tmp_path / "l.png"
    Image.new("L", (16, 16), 100).save(p)
    assert (_native(p) == 100).all()


def test_la_composited_on_black(tmp_path):
    p = tmp_path / "la.png"
    Image.new("LA", (16, 16), (200, 128)).save(p)
    assert (_native(p) == round(200 * 128 / 255)).all()


def test_rgba_composited_on_black(tmp_path):
    p = tmp_path / "rgba.png"
    img = Image.new("RGBA", (16, 16), (255, 0, 0, 128))
    img.putpixel((0, 0), (0, 255, 0, 0))  # fully transparent green -> black
    img.putpixel((1, 0), (0, 0, 255, 255))  # opaque blue stays blue
    img.save(p)
    out = _native(p)
    assert tuple(out[5, 5]) == (128, 0, 0)
    assert tuple(out[0, 0]) == (0, 0, 0)
    assert tuple(out[0, 1]) == BLUE


def test_palette_with_transparency(tmp_path):
    p = tmp_path / "p.png"
    img = Image.new("P", (16, 16), 0)
    img.putpalette([*RED, *GREEN])
    img.putpixel((3, 2), 1)
    img.info["transparency"] = 0  # palette entry 0 (red) is transparent
    img.save(p)
    assert Image.open(p).info.get("transparency") == 0
    out = _native(p)
    assert tuple(out[2, 3]) == GREEN
    assert tuple(out[0, 0]) == (0, 0, 0)  # transparent red composited on black


def test_palette_without_transparency(tmp_path):
    p = tmp_path / "p.gif"
    img = Image.new("P", (16, 16), 1)
    img.putpalette([*RED, *GREEN])
    img.save(p)
    assert tuple(_native(p)[4, 4]) == GREEN


def test_cmyk_jpeg(tmp_path):
    p = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(p, quality=95)  # pure red
    assert Image.open(p).mode == "CMYK"
    out = _native(p).astype(int)
    assert np.abs(out - np.array(RED)).max() <= 3


def test_16bit_png_scaled_not_clipped(tmp_path):
    values = np.array([[0, 1000, 257 * 100, 30000, 65535]], dtype=np.uint16)
    p = tmp_path / "g16.png"
    Image.fromarray(values).save(p)
    assert Image.open(p).mode.startswith("I;16")
    out = load_rgb(p, 5, "native_crop")[2]  # row 2 of the padded 5x5 holds the 5x1 image
    expected = np.rint(values[0] / 257).astype(np.uint8)  # 0, 4, 100, 117, 255
    assert (out == expected[:, None]).all()


def test_16bit_greyscale_alpha_png(tmp_path):
    raw = b"".join(b"\x00" + struct.pack(">HH", 65535, 65535) * 4 for _ in range(4))
    p = tmp_path / "la16.png"
    p.write_bytes(_png_bytes(4, 4, 16, 4, raw))
    assert (load_rgb(p, 4, "native_crop") == 255).all()


def test_one_bit(tmp_path):
    p = tmp_path / "bits.png"
    img = Image.new("1", (16, 16), 0)
    img.putpixel((5, 6), 1)
    img.save(p)
    out = _native(p)
    assert tuple(out[6, 5]) == (255, 255, 255)
    assert out.sum() == 3 * 255


def test_wide_integer_and_float_modes(tmp_path):
    p = tmp_path / "i32.tif"
    Image.fromarray(np.full((4, 4), 65535, dtype=np.int32), "I").save(p)
    assert (load_rgb(p, 4, "native_crop") == 255).all()
    p = tmp_path / "f32.tif"
    Image.fromarray(np.full((4, 4), 0.5, dtype=np.float32), "F").save(p)
    assert (load_rgb(p, 4, "native_crop") == 128).all()


# --------------------------------------------------------------------------- EXIF


def _quadrant_image() -> Image.Image:
    """64 wide x 32 high, blue, with the stored top-left quadrant red."""
    arr = np.zeros((32, 64, 3), np.uint8)
    arr[:] = BLUE
    arr[:16, :32] = RED
    return Image.fromarray(arr)


def test_exif_orientation_6_is_applied(tmp_path):
    p = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # display = stored rotated 90 degrees clockwise
    _quadrant_image().save(p, quality=95, exif=exif.tobytes())
    out, orig = load_rgb_and_size(p, 64, "letterbox")
    assert orig == (32, 64)  # displayed width x height
    # Displayed image is 32 wide x 64 high, letterboxed into columns 16..47.
    assert (out[:, :14] == 0).all() and (out[:, 50:] == 0).all()
    top_right = out[4:28, 36:44].reshape(-1, 3).mean(0)
    top_left = out[4:28, 20:28].reshape(-1, 3).mean(0)
    bottom = out[36:60, 20:44].reshape(-1, 3).mean(0)
    assert np.abs(top_right - RED).max() < 10
    assert np.abs(top_left - BLUE).max() < 10
    assert np.abs(bottom - BLUE).max() < 10


def test_no_exif_keeps_stored_orientation(tmp_path):
    p = tmp_path / "plain.jpg"
    _quadrant_image().save(p, quality=95)
    out, orig = load_rgb_and_size(p, 64, "letterbox")
    assert orig == (64, 32)
    assert np.abs(out[20:28, 4:28].reshape(-1, 3).mean(0) - RED).max() < 10


# --------------------------------------------------------------------------- names, sizes


def test_png_named_jpg_and_uppercase_extension(tmp_path):
    for name in ("really_png.jpg", "SHOUT.JPG"):
        p = tmp_path / name
        Image.new("RGB", (16, 16), GREEN).save(p, format="PNG")
        assert tuple(_native(p)[8, 8]) == GREEN


@pytest.mark.parametrize("mode", RESIZE_MODES)
def test_one_pixel_image(tmp_path, mode):
    p = tmp_path / "dot.png"
    Image.new("RGB", (1, 1), GREEN).save(p)
    out = load_rgb(p, 16, mode)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    if mode == "native_crop":
        assert tuple(out[7, 7]) == GREEN and out.sum() == 255  # (16 - 1) // 2 = 7
    else:
        assert (out == np.array(GREEN, np.uint8)).all()


# --------------------------------------------------------------------------- bad files


def _assert_bad(path: Path, reason_part: str, **kwargs) -> ImageReadError:
    with pytest.raises(DataError) as info:
        load_rgb(path, 32, "squash", **kwargs)
    err = info.value
    assert isinstance(err, ImageReadError)
    assert str(path) in str(err)
    assert reason_part in err.reason, err.reason
    return err


def test_zero_byte_file(tmp_path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    _assert_bad(p, "empty file")


def test_missing_file(tmp_path):
    _assert_bad(tmp_path / "nope.jpg", "not found")


def test_truncated_jpeg_is_reported_not_padded(tmp_path):
    p = tmp_path / "cut.jpg"
    Image.fromarray(_noise(256, 256)).save(p, quality=90)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    _assert_bad(p, "truncated")
    _assert_bad(p, "truncated", draft=False)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_garbage_bytes(tmp_path):
    p = tmp_path / "garbage.jpg"
    p.write_bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    _assert_bad(p, "not a recognised image")


def test_corrupt_png_data(tmp_path):
    p = tmp_path / "bad.png"
    p.write_bytes(_png_bytes(64, 64, 8, 2, b"too short"))
    _assert_bad(p, "corrupt or truncated")


def test_directory_named_like_an_image(tmp_path):
    p = tmp_path / "x.jpg"
    p.mkdir()
    _assert_bad(p, "directory")


def test_decompression_bomb_refused_before_decoding(tmp_path):
    # 12000 x 9000 = 108M pixels: above our default limit, below PIL's own hard limit.
    # The pixel data is deliberately missing: the header alone must be enough to refuse.
    p = tmp_path / "bomb.png"
    p.write_bytes(_png_bytes(12000, 9000, 1, 0, b"\x00" * 10))
    err = _assert_bad(p, "exceeds the limit of 100000000 pixels")
    assert "12000x9000" in err.reason


def test_huge_header_refused_even_above_pil_limit(tmp_path):
    p = tmp_path / "bigger_bomb.png"
    p.write_bytes(_png_bytes(20000, 20000, 1, 0, b"\x00" * 10))
    _assert_bad(p, "decompression bomb", max_pixels=None)


def test_max_pixels_low_and_none(tmp_path):
    p = tmp_path / "normal.png"
    Image.new("RGB", (64, 64), RED).save(p)
    _assert_bad(p, "exceeds the limit of 1000 pixels", max_pixels=1000)
    assert load_rgb(p, 32, "squash", max_pixels=None).shape == (32, 32, 3)
    assert load_rgb(p, 32, "squash", max_pixels=64 * 64).shape == (32, 32, 3)


# --------------------------------------------------------------------------- geometry


def test_squash_ignores_aspect(tmp_path):
    arr = np.zeros((32, 64, 3), np.uint8)
    arr[:, :32] = RED
    arr[:, 32:] = BLUE
    p = tmp_path / "wide.png"
    Image.fromarray(arr).save(p)
    out = load_rgb(p, 32, "squash")
    assert out.shape == (32, 32, 3)
    assert (out[:, :14] == RED).all() and (out[:, 18:] == BLUE).all()


def test_center_crop_keeps_the_middle(tmp_path):
    arr = np.zeros((32, 96, 3), np.uint8)
    arr[:, :32], arr[:, 32:64], arr[:, 64:] = RED, GREEN, BLUE
    p = tmp_path / "bands.png"
    Image.fromarray(arr).save(p)
    out = load_rgb(p, 16, "center_crop")
    assert out.shape == (16, 16, 3)
    assert (out[:, 2:14] == GREEN).all()  # outer columns may blend a little across the edge


def test_letterbox_pads_black_and_keeps_aspect(tmp_path):
    p = tmp_path / "white.png"
    Image.new("RGB", (64, 32), (255, 255, 255)).save(p)
    out = load_rgb(p, 32, "letterbox")
    assert (out[:8] == 0).all() and (out[24:] == 0).all()
    assert (out[8:24] == 255).all()
    p = tmp_path / "tall.png"
    Image.new("RGB", (10, 40), (255, 255, 255)).save(p)
    out = load_rgb(p, 32, "letterbox")  # 8 x 32 content, columns 12..19
    assert (out[:, :12] == 0).all() and (out[:, 20:] == 0).all() and (out[:, 12:20] == 255).all()


def test_native_crop_is_exact_centre(tmp_path):
    arr = _noise(40, 50)
    p = tmp_path / "noise.png"
    Image.fromarray(arr).save(p)
    assert np.array_equal(load_rgb(p, 32, "native_crop"), arr[4:36, 9:41])


def test_native_crop_pads_small_images(tmp_path):
    arr = _noise(10, 20)
    p = tmp_path / "small.png"
    Image.fromarray(arr).save(p)
    out = load_rgb(p, 32, "native_crop")
    assert np.array_equal(out[11:21, 6:26], arr)
    mask = np.ones((32, 32), bool)
    mask[11:21, 6:26] = False
    assert (out[mask] == 0).all()


def test_native_crop_never_drafts_a_large_jpeg(tmp_path):
    p = tmp_path / "big.jpg"
    Image.fromarray(_noise(400, 400)).save(p, quality=90)
    full = np.asarray(Image.open(p).convert("RGB"))
    assert np.array_equal(load_rgb(p, 64, "native_crop"), full[168:232, 168:232])


# --------------------------------------------------------------------------- JPEG draft


@pytest.mark.parametrize("mode", ["squash", "center_crop", "letterbox"])
def test_draft_when_shrinking_2x_is_close_to_full_decode(tmp_path, mode):
    p = tmp_path / "big.jpg"
    Image.fromarray(_smooth(384, 512)).save(p, quality=90)
    drafted = load_rgb(p, 64, mode)
    full = load_rgb(p, 64, mode, draft=False)
    assert drafted.shape == full.shape == (64, 64, 3)
    assert not np.array_equal(drafted, full)  # the draft path really ran
    assert np.abs(drafted.astype(int) - full).mean() < 2.0


def test_no_draft_when_shrinking_less_than_2x(tmp_path):
    p = tmp_path / "mid.jpg"
    Image.fromarray(_smooth(96, 96)).save(p, quality=90)
    assert np.array_equal(load_rgb(p, 64, "squash"), load_rgb(p, 64, "squash", draft=False))


def test_draft_never_decodes_below_the_target(tmp_path, monkeypatch):
    """Spy on the real Image.draft: the decoded size must cover what the resize needs."""
    calls: list[tuple[tuple[int, int], tuple[int, int]]] = []
    real_draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        result = real_draft(self, mode, size)
        calls.append((size, self.size))
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)

    exif = Image.Exif()
    exif[0x0112] = 6
    cases = [  # (stored w, h, exif, mode, size, needed stored w, h)
        (1000, 300, None, "center_crop", 64, 213, 64),
        (1000, 300, None, "letterbox", 64, 64, 19),
        (1000, 300, None, "squash", 64, 64, 64),
        (1000, 300, exif, "center_crop", 64, 213, 64),  # displayed 300 x 1000
        (1000, 300, exif, "letterbox", 64, 64, 19),
    ]
    for w, h, ex, mode, size, need_w, need_h in cases:
        calls.clear()
        p = tmp_path / f"{w}x{h}_{mode}_{ex is not None}.jpg"
        kwargs = {"exif": ex.tobytes()} if ex is not None else {}
        Image.fromarray(_smooth(h, w)).save(p, quality=90, **kwargs)
        out = load_rgb(p, size, mode)
        assert out.shape == (size, size, 3)
        assert len(calls) == 1, (mode, calls)
        _, decoded = calls[0]
        assert decoded[0] >= need_w and decoded[1] >= need_h, (mode, decoded)
        assert decoded[0] < w  # it did shrink
    calls.clear()
    load_rgb(tmp_path / "1000x300_squash_False.jpg", 64, "native_crop")
    assert calls == []
