"""Decode one image file into a square uint8 RGB array, without hidden lossy steps.

Deepfake traces live in high frequencies, so the only lossy step here is the resize the
user chose (`resize` mode). Choices made once, for every image:

* Files are decoded by content, not by extension (a PNG named `.jpg` is fine).
* EXIF orientation is applied, so the array shows the image the way viewers show it.
* Transparent pixels are composited on **black**, the same value letterbox and
  native_crop use for padding: "no picture here" is always 0.
* 16-bit greyscale (PIL modes `I;16*`) is scaled by 255/65535 (not clipped at 255).
  Wide modes `I`/`F` are treated as 16-bit data when their values fit 0..65535
  (`F` in 0..1 as unit floats); anything else is stretched from its min..max.
  16-bit colour PNGs are already reduced to 8 bit by PIL itself (high byte).
* No colour management: pixel values are taken as stored (ICC profiles are ignored),
  as in the public baseline.
* Resampling is PIL BICUBIC with `reducing_gap=None`: a true antialiased convolution over
  the whole support (no cheap box pre-reduction). Bicubic keeps more high frequency than
  bilinear (the baseline's torchvision default) and rings less than Lanczos, whose
  overshoot would add halo artefacts a detector could learn.
* JPEG draft decoding (DCT-domain downscale by 2, 4 or 8) is used only when the image
  shrinks by 2x or more, and asks for no fewer pixels than the final resize needs, so it
  replaces only part of the downscale. Never for `native_crop`, which must keep the
  original pixels exactly.
* Truncated or corrupt files raise `ImageReadError` (a `DataError`);
  `ImageFile.LOAD_TRUNCATED_IMAGES` is left alone so they are never silently padded.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .config import schema_choices
from .errors import DataError

RESIZE_MODES = schema_choices("cache.resize")

_RESAMPLE = Image.Resampling.BICUBIC
_ALPHA_MODES = {"LA", "La", "PA", "RGBA", "RGBa"}


class ImageReadError(DataError):
    """An image file could not be decoded; `path` and `reason` are kept separately."""

    def __init__(self, path: Path, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def load_rgb(
    path: Path,
    size: int,
    resize: str,
    *,
    max_pixels: int | None = 100_000_000,
    draft: bool = True,
) -> np.ndarray:
    """Decode `path` into a (size, size, 3) uint8 RGB array.

    `resize` is one of RESIZE_MODES: `squash` (whole image to size x size, aspect ignored),
    `center_crop` (short side to size, then centre crop), `letterbox` (long side to size,
    black padding), `native_crop` (no resampling: centre size x size crop of the original
    pixels, black padding where the image is smaller). `max_pixels` refuses images whose
    header declares more pixels (None: no limit of ours; PIL still refuses images above
    2 * PIL.Image.MAX_IMAGE_PIXELS unless the caller raises that). `draft=False` turns off
    JPEG draft decoding. Raises ImageReadError (a DataError) naming the file and reason.
    """
    array, _ = load_rgb_and_size(path, size, resize, max_pixels=max_pixels, draft=draft)
    return array


def load_rgb_and_size(
    path: Path,
    size: int,
    resize: str,
    *,
    max_pixels: int | None = 100_000_000,
    draft: bool = True,
) -> tuple[np.ndarray, tuple[int, int]]:
    """Like `load_rgb`, also returning the original (width, height) after EXIF rotation."""
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {RESIZE_MODES}, not {resize!r}")
    if size < 1:
        raise ValueError(f"size must be positive, not {size}")
    path = Path(path)
    _check_file(path)
    try:
        with warnings.catch_warnings():
            # We apply our own limit (max_pixels) before decoding; PIL's warning is noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                return _decode(im, path, size, resize, max_pixels, draft)
    except ImageReadError:
        raise
    except Image.DecompressionBombError as exc:
        reason = f"refused as a possible decompression bomb by PIL: {exc}"
        raise ImageReadError(path, reason) from exc
    except Image.UnidentifiedImageError as exc:
        raise ImageReadError(path, "not a recognised image format") from exc
    except MemoryError as exc:
        raise ImageReadError(path, "out of memory while decoding") from exc
    except Exception as exc:  # PIL raises OSError, SyntaxError, struct.error, ... on bad data
        reason = f"corrupt or truncated image ({type(exc).__name__}: {exc})"
        raise ImageReadError(path, reason) from exc


def _check_file(path: Path) -> None:
    try:
        if path.is_dir():
            raise ImageReadError(path, "is a directory, not an image file")
        if path.stat().st_size == 0:
            raise ImageReadError(path, "empty file (0 bytes)")
    except FileNotFoundError as exc:
        raise ImageReadError(path, "file not found") from exc
    except PermissionError as exc:
        raise ImageReadError(path, "permission denied") from exc


def _decode(
    im: Image.Image, path: Path, size: int, resize: str, max_pixels: int | None, draft: bool
) -> tuple[np.ndarray, tuple[int, int]]:
    raw_w, raw_h = im.size  # from the header; nothing decoded yet
    if max_pixels is not None and raw_w * raw_h > max_pixels:
        raise ImageReadError(
            path,
            f"{raw_w}x{raw_h} = {raw_w * raw_h} pixels exceeds the limit of {max_pixels} "
            "pixels (possible decompression bomb; raise max_pixels to accept it)",
        )
    if draft and resize != "native_crop" and im.format == "JPEG":
        # The resampled size is rotation-equivariant, so EXIF orientation can be ignored here.
        need_w, need_h = _resampled_size(resize, raw_w, raw_h, size)
        if min(raw_w // need_w, raw_h // need_h) >= 2:
            # PIL picks the largest DCT scale (2, 4, 8) keeping both sides >= the request.
            im.draft("RGB", (need_w, need_h))

    im.load()  # raises on truncated data (LOAD_TRUNCATED_IMAGES stays False)
    decoded_size = im.size
    ImageOps.exif_transpose(im, in_place=True)
    orig_size = (raw_w, raw_h) if im.size == decoded_size else (raw_h, raw_w)

    if resize == "native_crop":
        out = _native_crop(im, size)
    else:
        out = _resample(_to_rgb(im), size, resize)
    return out, orig_size


def _resampled_size(resize: str, width: int, height: int, size: int) -> tuple[int, int]:
    """Size of the whole image after resampling (before any crop or padding)."""
    if resize == "squash":
        return size, size
    if resize == "center_crop":
        scale = size / min(width, height)
        return max(size, round(width * scale)), max(size, round(height * scale))
    scale = size / max(width, height)  # letterbox
    return max(1, round(width * scale)), max(1, round(height * scale))


def picture_box(resize: str, width: int, height: int, size: int) -> tuple[int, int, int, int]:
    """Where the picture lies in a cached size x size square: (x0, y0, w, h).

    Black padding (letterbox, or native_crop of an image smaller than the cache) is outside
    the box, so crops taken inside it never show padding the image did not have.
    """
    if resize in ("squash", "center_crop"):
        return 0, 0, size, size
    if resize == "native_crop":
        _, dst_x, n_x = centre_span(width, size)
        _, dst_y, n_y = centre_span(height, size)
        return dst_x, dst_y, n_x, n_y
    new_w, new_h = _resampled_size("letterbox", width, height, size)
    return (size - new_w) // 2, (size - new_h) // 2, new_w, new_h


def picture_shift(resize: str, width: int, height: int, size: int) -> tuple[int, int]:
    """Where the cached square's pixel (0, 0) lies in the original image (x, y): only a
    native_crop cache keeps original pixels at a fixed offset (its centre crop or padding);
    resampled caches have no such grid and count as (0, 0)."""
    if resize != "native_crop":
        return 0, 0
    src_x, dst_x, _ = centre_span(width, size)
    src_y, dst_y, _ = centre_span(height, size)
    return src_x - dst_x, src_y - dst_y


def _resample(im: Image.Image, size: int, resize: str) -> np.ndarray:
    width, height = im.size
    if resize == "squash":
        return np.asarray(im.resize((size, size), _RESAMPLE, reducing_gap=None))
    if resize == "center_crop":
        # Resample straight from the centred square box: filter support can reach outside
        # the box (no edge artefact) and no pixels are resampled only to be thrown away.
        side = min(width, height)
        left, top = (width - side) / 2, (height - side) / 2
        box = (left, top, left + side, top + side)
        return np.asarray(im.resize((size, size), _RESAMPLE, box=box, reducing_gap=None))
    new_w, new_h = _resampled_size("letterbox", width, height, size)
    fitted = np.asarray(im.resize((new_w, new_h), _RESAMPLE, reducing_gap=None))
    out = np.zeros((size, size, 3), np.uint8)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    out[top : top + new_h, left : left + new_w] = fitted
    return out


def _native_crop(im: Image.Image, size: int) -> np.ndarray:
    """Centre size x size window of the original pixels, zero-padded where too small."""
    width, height = im.size
    src_x, dst_x, n_x = centre_span(width, size)
    src_y, dst_y, n_y = centre_span(height, size)
    # Crop before converting the mode: conversion is per pixel, so the order is exact.
    window = _to_rgb(im.crop((src_x, src_y, src_x + n_x, src_y + n_y)))
    out = np.zeros((size, size, 3), np.uint8)
    out[dst_y : dst_y + n_y, dst_x : dst_x + n_x] = np.asarray(window)
    return out


def centre_span(length: int, size: int) -> tuple[int, int, int]:
    """(source start, destination start, count) of a centred window along one axis."""
    if length >= size:
        return (length - size) // 2, 0, size
    return 0, (size - length) // 2, length


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB (see the module docstring for the rules)."""
    mode = im.mode
    if mode == "RGB" and "transparency" not in im.info:
        return im
    if mode.startswith("I;16") or mode in ("I", "F"):
        grey = _wide_to_uint8(np.asarray(im), mode)
        return Image.fromarray(np.repeat(grey[:, :, None], 3, axis=2), "RGB")
    if mode in _ALPHA_MODES or "transparency" in im.info:
        rgba = np.asarray(im.convert("RGBA"), dtype=np.uint16)
        alpha = rgba[:, :, 3:4]
        # Composite on black = premultiply by alpha, rounded.
        rgb = (rgba[:, :, :3] * alpha + 127) // 255
        return Image.fromarray(rgb.astype(np.uint8), "RGB")
    # 1, L, P, CMYK (PIL undoes Adobe's inverted CMYK), YCbCr, RGBX, ...
    return im.convert("RGB")


def _wide_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    values = values.astype(np.float64)
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if mode.startswith("I;16") or (lo >= 0 and hi <= 65535 and not (mode == "F" and hi <= 1)):
        scaled = values * (255 / 65535)
    elif mode == "F" and lo >= 0 and hi <= 1:
        scaled = values * 255
    else:
        scaled = (values - lo) * (255 / (hi - lo)) if hi > lo else np.zeros_like(values)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
