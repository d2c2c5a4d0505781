"""Procedurally generated demo data laid out exactly like the Multi-FFDI competition set.

Every image is a synthetic "photo" of a face (head, hair, eyes, brows, nose, mouth,
shoulders, background) with random lighting, texture, optical blur and sensor noise.
Fakes are the same kind of photo with a forgery trace added at the scale of the face:

- ``self_blend``: a colour/sharpness-altered, slightly shifted copy of the face blended
  back with a soft elliptical mask (after Shiohara & Yamasaki, CVPR 2022).
- ``upsample``: the face region re-generated at 1/2, 1/4 or 1/8 resolution and up-sampled
  by nearest neighbour or stacked 2x transposed convolutions (zero insertion + fixed uneven
  kernel), which leaves periodic (checkerboard) spectral peaks and a noise-free face.
- ``noise_mismatch``: the face smoothed and re-noised at a clearly different level.
- ``face_swap`` (held out, val/test only): the inner face of another identity, shot with
  another camera, pasted with a nearly hard seam and only partial colour correction.

Image size and JPEG quality are drawn from each image's own random stream *before*
anything that depends on the label, so they carry no information about it.
Everything is a pure function of ``(seed, split, index)``: the same arguments give the
same bytes, whatever the number of worker processes.
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import io
import math
import multiprocessing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from .atomic import atomic_path
from .config import check_values
from .errors import DataError

REAL = "real"
TRAIN_METHODS = ("self_blend", "upsample", "noise_mismatch")
HELD_OUT_METHODS = ("face_swap",)
JPEG_QUALITY_RANGE = (75, 97)  # inclusive


@dataclass(frozen=True)
class SplitSpec:
    """Where one split lives in the FFDI layout and how it is composed."""

    name: str  # folder name, also the `split` column of methods.csv
    code: int  # part of the per-image random key; never change (it would change the bytes)
    phase: str
    fake_ratio: float
    methods: tuple[str, ...]
    label_file: str  # ground truth (hidden truth for the test split)
    nolabel_file: str | None = None  # what the real test split ships instead of labels


SPLITS = (
    SplitSpec("trainset", 1, "phase1", 0.8, TRAIN_METHODS, "trainset_label.txt"),
    SplitSpec("valset", 2, "phase1", 0.6, TRAIN_METHODS + HELD_OUT_METHODS, "valset_label.txt"),
    SplitSpec(
        "testset1_seen", 3, "phase2", 0.6, TRAIN_METHODS + HELD_OUT_METHODS,
        "testset1_seen_label.txt", nolabel_file="testset1_seen_nolabel.txt",
    ),
)


# --------------------------------------------------------------------------- drawing


@dataclass(frozen=True)
class FaceGeometry:
    """Head ellipse: centre, semi-axes (pixels) and in-plane rotation (radians)."""

    cx: float
    cy: float
    rx: float
    ry: float
    theta: float

    def to_image(self, du: float, dv: float) -> tuple[float, float]:
        """Image position of a point given in head units (fractions of rx, ry)."""
        x, y = du * self.rx, dv * self.ry
        c, s = math.cos(self.theta), math.sin(self.theta)
        return self.cx + c * x - s * y, self.cy + s * x + c * y

    def local(self, ys: np.ndarray, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Head coordinates (u, v) of pixel grids; the head is u**2 + v**2 < 1."""
        c, s = math.cos(self.theta), math.sin(self.theta)
        dx, dy = xs - self.cx, ys - self.cy
        return (c * dx + s * dy) / self.rx, (-s * dx + c * dy) / self.ry


def _ellipse_alpha(shape, cx, cy, a, b, theta=0.0, soft=1.0):
    """Anti-aliased ellipse coverage on a bounding box: (slices, alpha) or None if empty."""
    h, w = shape
    reach = max(a, b) + 2 * soft + 1
    y0, y1 = max(0, int(cy - reach)), min(h, int(cy + reach) + 1)
    x0, x1 = max(0, int(cx - reach)), min(w, int(cx + reach) + 1)
    if y0 >= y1 or x0 >= x1:
        return None
    ys = np.arange(y0, y1, dtype=np.float32)[:, None] - cy
    xs = np.arange(x0, x1, dtype=np.float32)[None, :] - cx
    c, s = math.cos(theta), math.sin(theta)
    u = (c * xs + s * ys) / a
    v = (-s * xs + c * ys) / b
    # radial distance scaled to pixels: a cheap signed distance good enough for soft edges
    dist = (1.0 - np.sqrt(u * u + v * v)) * min(a, b)
    alpha = np.clip(dist / soft + 0.5, 0.0, 1.0)
    return (slice(y0, y1), slice(x0, x1)), alpha


def _paint(img, region, colour, opacity=1.0):
    """Alpha-composite a colour (constant RGB or array over the region) into img."""
    if region is None:
        return
    sl, alpha = region
    a = (alpha * opacity)[..., None]
    img[sl] = img[sl] * (1.0 - a) + np.asarray(colour, dtype=np.float32) * a


def _fractal_noise(rng, h, w, cells, octaves=3, aspect=1.0):
    """Smooth zero-mean noise (about unit std) built from up-sampled random grids."""
    out = np.zeros((h, w), dtype=np.float32)
    amp, total = 1.0, 0.0
    for _ in range(octaves):
        gy = max(2, int(round(cells * aspect)))
        gx = max(2, int(round(cells / aspect)))
        grid = rng.standard_normal((gy, gx)).astype(np.float32)
        out += amp * np.asarray(Image.fromarray(grid).resize((w, h), Image.BICUBIC))
        total += amp * amp
        amp *= 0.5
        cells *= 2
    return out / math.sqrt(total)


SKIN_LIGHT = np.array([0.96, 0.80, 0.69], dtype=np.float32)
SKIN_DARK = np.array([0.36, 0.23, 0.16], dtype=np.float32)
HAIR_COLOURS = np.array(
    [[0.06, 0.05, 0.05], [0.25, 0.16, 0.10], [0.45, 0.30, 0.18], [0.80, 0.66, 0.40],
     [0.55, 0.25, 0.12], [0.62, 0.62, 0.62]], dtype=np.float32,
)
IRIS_COLOURS = np.array(
    [[0.30, 0.18, 0.08], [0.15, 0.10, 0.06], [0.25, 0.45, 0.65], [0.30, 0.45, 0.25]],
    dtype=np.float32,
)


def _draw_geometry(rng, h, w) -> FaceGeometry:
    s = min(h, w)
    ry = s * rng.uniform(0.25, 0.33)
    rx = ry * rng.uniform(0.70, 0.84)
    cx = w / 2 + rng.uniform(-0.10, 0.10) * w
    cy = h / 2 + rng.uniform(-0.07, 0.07) * h
    cx = float(np.clip(cx, 1.25 * rx, w - 1.25 * rx))
    cy = float(np.clip(cy, 1.15 * ry, h - 0.9 * ry))
    return FaceGeometry(cx, cy, rx, ry, rng.uniform(-0.22, 0.22))


def _render_background(rng, h, w, ys, xs):
    c0, c1 = rng.uniform(0.08, 0.92, 3), rng.uniform(0.08, 0.92, 3)
    angle = rng.uniform(0, 2 * math.pi)
    t = (xs * math.cos(angle) + ys * math.sin(angle)) / max(h, w)
    t = (t - t.min()) / max(1e-6, float(t.max() - t.min()))
    img = (c0 + (c1 - c0) * t[..., None]).astype(np.float32)
    for _ in range(rng.integers(0, 6)):  # furniture, windows, pictures on the wall
        colour = rng.uniform(0.05, 0.95, 3)
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        a, b = rng.uniform(0.05, 0.4) * w, rng.uniform(0.05, 0.4) * h
        if rng.random() < 0.5:
            region = _ellipse_alpha((h, w), cx, cy, a, b, rng.uniform(0, math.pi), soft=2.0)
        else:  # an axis-aligned box
            y0, y1 = int(max(0, cy - b)), int(min(h, cy + b))
            x0, x1 = int(max(0, cx - a)), int(min(w, cx + a))
            region = None
            if y0 < y1 and x0 < x1:
                region = ((slice(y0, y1), slice(x0, x1)), np.ones((y1 - y0, x1 - x0), np.float32))
        _paint(img, region, colour, opacity=rng.uniform(0.5, 1.0))
    texture = _fractal_noise(rng, h, w, cells=rng.uniform(3, 12))
    img *= 1.0 + rng.uniform(0.02, 0.15) * texture[..., None]
    defocus = rng.uniform(0.0, 3.0)  # shallow depth of field
    if defocus > 0.3:
        img = ndimage.gaussian_filter(img, sigma=(defocus, defocus, 0))
    return img


def _render_scene(rng, h, w, geometry: FaceGeometry | None = None):
    """A clean (noise-free) portrait as float32 HxWx3 in [0, 1], and its head geometry."""
    ys = np.arange(h, dtype=np.float32)[:, None]
    xs = np.arange(w, dtype=np.float32)[None, :]
    img = _render_background(rng, h, w, ys, xs)
    g = geometry if geometry is not None else _draw_geometry(rng, h, w)
    u, v = g.local(ys, xs)

    # light in head coordinates; Lambert shading on an ellipsoid head
    az, el = rng.uniform(0, 2 * math.pi), rng.uniform(0.35, 1.2)
    light = np.array([math.cos(az) * math.cos(el), math.sin(az) * math.cos(el), math.sin(el)])
    ambient = rng.uniform(0.25, 0.6)

    def shade(scale: float) -> np.ndarray:
        uu, vv = u / scale, v / scale
        nz = np.sqrt(np.clip(1.0 - uu * uu - vv * vv, 0.0, 1.0))
        lam = np.clip(uu * light[0] + vv * light[1] + nz * light[2], 0.0, 1.0)
        return (ambient + (1 - ambient) * lam)[..., None].astype(np.float32)

    head_shade = shade(1.0)
    big_shade = shade(1.6)
    skin = SKIN_LIGHT + (SKIN_DARK - SKIN_LIGHT) * rng.uniform(0, 1)
    skin = np.clip(skin * rng.uniform(0.93, 1.07, 3), 0, 1).astype(np.float32)
    hair = np.clip(HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))] * rng.uniform(0.8, 1.2, 3), 0, 1)
    hair = hair.astype(np.float32)  # float64 colours would silently promote whole layers
    bald = rng.random() < 0.12
    long_hair = rng.random() < 0.4

    def at(du, dv):
        return g.to_image(du, dv)

    def paint_local(du, dv, a_px, b_px, colour, soft=1.0, opacity=1.0, dtheta=0.0):
        cx, cy = at(du, dv)
        region = _ellipse_alpha((h, w), cx, cy, a_px, b_px, g.theta + dtheta, soft)
        if region is not None and np.ndim(colour) == 3:
            colour = colour[region[0]]
        _paint(img, region, colour, opacity)
        return region

    # shoulders and clothes
    cloth = rng.uniform(0.05, 0.9, 3).astype(np.float32)
    sx, sy = at(rng.uniform(-0.15, 0.15), rng.uniform(1.75, 2.05))
    region = _ellipse_alpha((h, w), sx, sy, g.rx * rng.uniform(2.0, 2.8),
                            g.ry * rng.uniform(0.8, 1.1), g.theta * 0.3, soft=1.5)
    if region is not None:
        _paint(img, region, cloth * big_shade[region[0]])

    hair_tex = 1.0 + rng.uniform(0.08, 0.3) * _fractal_noise(
        rng, h, w, cells=rng.uniform(6, 14), aspect=0.15)[..., None]
    hair_layer = np.clip(hair * hair_tex * big_shade, 0, 1)
    if not bald:
        top = rng.uniform(0.05, 0.22)
        paint_local(0, -top, g.rx * rng.uniform(1.08, 1.3), g.ry * rng.uniform(1.0, 1.15),
                    hair_layer, soft=2.0)
        if long_hair:
            paint_local(0, 0.6, g.rx * rng.uniform(1.1, 1.35), g.ry * rng.uniform(0.7, 1.0),
                        hair_layer, soft=2.0)

    skin_tex = 1.0 + rng.uniform(0.01, 0.05) * _fractal_noise(
        rng, h, w, cells=rng.uniform(8, 20))[..., None]
    skin_layer = np.clip(skin * skin_tex * head_shade, 0, 1)
    neck_layer = np.clip(skin * skin_tex * big_shade * 0.85, 0, 1)
    paint_local(0, 0.95, g.rx * 0.45, g.ry * 0.55, neck_layer, soft=1.5)
    for side in (-1, 1):  # ears
        paint_local(side * 0.98, 0.05, g.rx * 0.14, g.ry * 0.2, skin_layer * 0.9, soft=1.5)
    paint_local(0, 0, g.rx, g.ry, skin_layer, soft=1.2)

    if not bald:  # fringe: the top of the head covered by hair, wavy edge
        fringe = rng.uniform(-0.7, -0.4) + rng.uniform(0.02, 0.1) * np.sin(
            u * rng.uniform(4, 12) + rng.uniform(0, 6.3))
        inside = (u * u + v * v < 1.02).astype(np.float32)
        cover = np.clip((fringe - v) * g.ry / 1.5 + 0.5, 0, 1) * inside
        a = cover[..., None]
        img = img * (1 - a) + hair_layer * a
        if rng.random() < 0.15:  # beard
            beard = np.clip((v - rng.uniform(0.3, 0.5)) * g.ry / 3.0, 0, 1) * inside
            beard *= np.clip(0.6 + 0.4 * hair_tex[..., 0], 0, 1)
            a = beard[..., None] * rng.uniform(0.5, 0.9)
            img = img * (1 - a) + hair_layer * a

    # eyes
    ex, ey = rng.uniform(0.32, 0.42), rng.uniform(-0.14, 0.0)
    ea = g.rx * rng.uniform(0.14, 0.19)
    eb = ea * rng.uniform(0.42, 0.58)
    iris = IRIS_COLOURS[rng.integers(len(IRIS_COLOURS))] * rng.uniform(0.8, 1.2)
    gaze = rng.uniform(-0.3, 0.3, 2)
    sclera = rng.uniform(0.8, 0.95)
    brow_lift, brow_a = rng.uniform(0.14, 0.22), g.rx * rng.uniform(0.17, 0.24)
    brow_b = g.ry * rng.uniform(0.025, 0.045)
    brow_colour = hair * 0.8 if not bald else skin * 0.35
    for side in (-1, 1):
        paint_local(side * ex, ey, ea * 1.4, eb * 2.0, skin_layer * 0.72, soft=3.0, opacity=0.6)
        white = paint_local(side * ex, ey, ea, eb, sclera * head_shade, soft=1.0)
        cx, cy = at(side * ex + gaze[0] * ea / g.rx, ey + gaze[1] * eb / g.ry)
        for radius, colour in ((eb * 0.95, iris), (eb * 0.42, (0.03, 0.03, 0.03))):
            disc = _ellipse_alpha((h, w), cx, cy, radius, radius, 0.0, 1.0)
            if disc is not None and white is not None:
                # keep the iris inside the eye opening
                clip = np.zeros((h, w), np.float32)
                clip[white[0]] = white[1]
                _paint(img, (disc[0], np.minimum(disc[1], clip[disc[0]])), colour)
        paint_local(side * ex + 0.05 * light[0], ey - 0.04, eb * 0.22, eb * 0.22,
                    (1.0, 1.0, 1.0), soft=0.8, opacity=0.8)
        paint_local(side * ex, ey - 0.35 * eb / g.ry, ea * 1.02, eb * 0.28,
                    skin_layer * 0.35, soft=1.0, opacity=0.8)  # upper lid line
        paint_local(side * ex * 1.02, ey - brow_lift, brow_a, brow_b, brow_colour,
                    soft=1.5, dtheta=side * rng.uniform(-0.1, 0.25))

    # nose: side shadow, nostrils, tip highlight
    nose_side = -1 if light[0] > 0 else 1
    paint_local(nose_side * 0.1, 0.12, g.rx * 0.06, g.ry * 0.2, skin_layer * 0.65,
                soft=3.0, opacity=0.6)
    for side in (-1, 1):
        paint_local(side * 0.1, 0.31, g.rx * 0.055, g.ry * 0.025, skin_layer * 0.4, soft=1.0)
    paint_local(0, 0.25, g.rx * 0.08, g.ry * 0.05, (1.0, 1.0, 1.0), soft=3.0, opacity=0.25)

    # mouth
    my = rng.uniform(0.5, 0.6)
    ma, mb = g.rx * rng.uniform(0.26, 0.4), g.ry * rng.uniform(0.045, 0.08)
    lip = np.clip(skin * np.array([1.0, 0.6, 0.6]) + np.array([0.12, 0.0, 0.02]), 0, 1)
    lip = np.clip(lip * rng.uniform(0.85, 1.1), 0, 1).astype(np.float32)
    paint_local(0, my, ma, mb, lip * head_shade, soft=1.2)
    if rng.random() < 0.3:  # open mouth with teeth
        paint_local(0, my, ma * 0.75, mb * 0.55, (0.25, 0.05, 0.05), soft=1.0)
        paint_local(0, my - 0.012, ma * 0.6, mb * 0.25, (0.9, 0.88, 0.8), soft=1.0)
    else:
        paint_local(0, my, ma * 0.92, max(1.0, mb * 0.15), lip * head_shade * 0.45, soft=0.8)

    # global light colour and exposure
    img *= rng.uniform(0.65, 1.15) * rng.uniform(0.9, 1.1, 3).astype(np.float32)
    return np.clip(img, 0, 1).astype(np.float32), g


@dataclass(frozen=True)
class Camera:
    """Optics blur (pixels) and Poisson-Gaussian sensor noise: var = gain*I + read**2."""

    blur: float
    gain: float
    read: float

    @classmethod
    def draw(cls, rng) -> "Camera":
        return cls(rng.uniform(0.35, 1.0), rng.uniform(0.0003, 0.004), rng.uniform(0.002, 0.012))

    def noise_std(self, img: np.ndarray) -> np.ndarray:
        return np.sqrt(self.gain * img + self.read ** 2)

    def shoot(self, rng, scene: np.ndarray) -> np.ndarray:
        img = ndimage.gaussian_filter(scene, sigma=(self.blur, self.blur, 0))
        noise = rng.standard_normal(img.shape, dtype=np.float32)
        # partly luminance-correlated, as after demosaicing
        noise = 0.6 * noise + 0.4 * noise.mean(axis=2, keepdims=True) * math.sqrt(3)
        return np.clip(img + noise * self.noise_std(img), 0, 1)


# --------------------------------------------------------------------------- forgeries


def _face_mask(rng, g: FaceGeometry, h, w, size=(0.55, 0.8), blur=(0.03, 0.1), shift=0.08):
    """Soft elliptical mask over the inner face (brows to chin), Gaussian-blurred edge.

    Smaller than the head so that the blending boundary runs through skin (cheeks,
    forehead), where it shows, rather than along the head outline, where it hides.
    """
    du, dv = rng.uniform(-shift, shift), rng.uniform(0.05, 0.2)
    a, b = g.rx * rng.uniform(*size), g.ry * rng.uniform(*size)
    cx, cy = g.to_image(du, dv)
    mask = np.zeros((h, w), np.float32)
    region = _ellipse_alpha((h, w), cx, cy, a, b, g.theta + rng.uniform(-0.2, 0.2), 1.0)
    if region is not None:
        mask[region[0]] = region[1]
    sigma = max(0.5, rng.uniform(*blur) * g.ry)
    mask = ndimage.gaussian_filter(mask, sigma)
    return (mask / max(1e-6, float(mask.max())))[..., None]


def _shift_scale(img, g: FaceGeometry, dx, dy, scale):
    """Resample img scaled by `scale` about the face centre and shifted by (dx, dy) px."""
    matrix = np.diag([1.0 / scale, 1.0 / scale, 1.0])
    centre = np.array([g.cy, g.cx, 0.0])
    offset = centre - matrix @ (centre + np.array([dy, dx, 0.0]))
    return ndimage.affine_transform(img, matrix, offset=offset, order=1, mode="nearest")


def _self_blend(rng, photo, g, camera):
    """SBI: the photo's own face, colour/sharpness-altered and shifted, blended back."""
    src = photo.copy()
    src = src * rng.uniform(0.85, 1.15) + rng.choice([-1, 1]) * rng.uniform(0.03, 0.1)
    src = src + rng.choice([-1, 1], 3) * rng.uniform(0.07, 0.15, 3)  # RGB shift
    # sharpness change at a scale that survives down-scaling to ~1/2
    s = rng.uniform(0.015, 0.03) * g.ry
    if rng.random() < 0.5:
        src = ndimage.gaussian_filter(src, sigma=(s, s, 0))
    else:  # unsharp mask
        src = src + rng.uniform(1.5, 3.0) * (src - ndimage.gaussian_filter(src, sigma=(s, s, 0)))
    d = 0.04 * g.ry
    src = _shift_scale(src, g, rng.uniform(-d, d), rng.uniform(-d, d), rng.uniform(0.95, 1.05))
    mask = _face_mask(rng, g, *photo.shape[:2], blur=(0.02, 0.06)) * rng.uniform(0.9, 1.0)
    return np.clip(src * mask + photo * (1 - mask), 0, 1)


def _upsample_stage(low, kernel):
    """One 2x transposed convolution: zero insertion then a fixed separable kernel."""
    h, w, c = low.shape
    up = np.zeros((2 * h, 2 * w, c), np.float32)
    up[::2, ::2] = low
    up = ndimage.convolve1d(up, kernel, axis=0, mode="nearest")
    return ndimage.convolve1d(up, kernel, axis=1, mode="nearest")


def _upsample(rng, photo, g, camera):
    """The face region averaged down by 2/4/8 and up-sampled like a generator would."""
    h, w = photo.shape[:2]
    # mostly coarse: a 2x trace alone is mostly filtered out by the later down-scaling
    factor = int(rng.choice([2, 4, 8], p=[0.1, 0.4, 0.5]))
    nearest = rng.random() < 0.4
    kernels = []
    for _ in range(int(math.log2(factor))):
        # taps a + b != 1: the two output phases get different gains -> checkerboard
        side = rng.uniform(0.45, 0.75) if rng.random() < 0.5 else rng.uniform(1.25, 1.55)
        split = rng.uniform(0.3, 0.7)
        k = np.array([side * split, 1.0, side * (1 - split)], np.float32)
        kernels.append(k * 2.0 / k.sum())  # unit DC gain after zero insertion
    pad = 1.35
    x0 = max(0, int(g.cx - pad * g.rx)) // factor * factor
    y0 = max(0, int(g.cy - pad * g.ry)) // factor * factor
    x1 = min(w, int(g.cx + pad * g.rx)) // factor * factor
    y1 = min(h, int(g.cy + 1.2 * g.ry)) // factor * factor
    crop = photo[y0:y1, x0:x1]
    ch, cw = crop.shape[:2]
    low = crop.reshape(ch // factor, factor, cw // factor, factor, 3).mean(axis=(1, 3))
    if nearest:
        up = low.repeat(factor, axis=0).repeat(factor, axis=1)
    else:
        up = low
        for k in kernels:
            up = _upsample_stage(up, k)
    fake = photo.copy()
    fake[y0:y1, x0:x1] = up
    mask = _face_mask(rng, g, h, w, size=(0.7, 1.0))
    return np.clip(fake * mask + photo * (1 - mask), 0, 1)


def _noise_mismatch(rng, photo, g, camera):
    """The face smoothed, then re-noised far below or far above the camera's level."""
    s = rng.uniform(0.02, 0.04) * g.ry  # face-scale smoothing: survives down-scaling
    smooth = ndimage.gaussian_filter(photo, sigma=(s, s, 0))
    level = float(np.mean(camera.noise_std(smooth)))
    factor = rng.uniform(0.0, 0.2) if rng.random() < 0.5 else rng.uniform(3.0, 5.0)
    std = max(level * factor, 0.025) if factor > 1 else level * factor
    renoised = smooth + rng.standard_normal(photo.shape, dtype=np.float32) * std
    mask = _face_mask(rng, g, *photo.shape[:2])
    return np.clip(renoised * mask + photo * (1 - mask), 0, 1)


def _face_swap(rng, photo, g, camera):
    """Another identity's face (other camera, low resolution) pasted with a hard seam."""
    h, w = photo.shape[:2]
    donor_scene, _ = _render_scene(rng, h, w, geometry=g)  # another identity, same pose
    donor = Camera.draw(rng).shoot(rng, donor_scene)
    # face-swap generators work at a low face resolution: down-scale, then bilinear up
    f = rng.uniform(2.0, 3.0)
    small = Image.fromarray(np.clip(donor * 255 + 0.5, 0, 255).astype(np.uint8))
    small = small.resize((max(8, int(w / f)), max(8, int(h / f))), Image.BILINEAR)
    donor = np.asarray(small.resize((w, h), Image.BILINEAR), np.float32) / 255.0
    d = 0.03 * g.ry
    donor = _shift_scale(donor, g, rng.uniform(-d, d), rng.uniform(-d, d), rng.uniform(0.97, 1.03))
    mask = _face_mask(rng, g, h, w, size=(0.68, 0.85), blur=(0.0, 0.0))
    seam = rng.uniform(0.8, 2.0)  # nearly hard seam
    mask = ndimage.gaussian_filter(mask, sigma=(seam, seam, 0))
    weight = mask[..., 0] > 0.5
    if weight.any():  # partial colour transfer towards the target face
        gap = photo[weight].mean(axis=0) - donor[weight].mean(axis=0)
        donor = donor + rng.uniform(0.3, 0.7) * gap
    return np.clip(donor * mask + photo * (1 - mask), 0, 1)


FORGERIES = {
    "self_blend": _self_blend,
    "upsample": _upsample,
    "noise_mismatch": _noise_mismatch,
    "face_swap": _face_swap,
}


# --------------------------------------------------------------------------- one image


def _image_rng(seed: int, split_code: int, index: int) -> np.random.Generator:
    # fixed-length key: SeedSequence pads entropy with zeros, so keys must not differ
    # only by trailing zeros
    return np.random.default_rng([seed, split_code, 1, index])


def render_image(seed: int, split_code: int, index: int, method: str,
                 min_size: int, max_size: int) -> bytes:
    """JPEG bytes of one demo image; `method` is 'real' or a key of FORGERIES."""
    rng = _image_rng(seed, split_code, index)
    # size and quality first: drawn identically whatever the label
    h, w = (int(x) for x in rng.integers(min_size, max_size + 1, 2))
    quality = int(rng.integers(JPEG_QUALITY_RANGE[0], JPEG_QUALITY_RANGE[1] + 1))
    scene, geometry = _render_scene(rng, h, w)
    camera = Camera.draw(rng)
    photo = camera.shoot(rng, scene)
    if method != REAL:
        photo = FORGERIES[method](rng, photo, geometry, camera)
    pixels = np.clip(photo * 255.0 + 0.5, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _render_task(args) -> bytes:
    return render_image(*args)


# --------------------------------------------------------------------------- the data set


def _plan_split(seed: int, spec: SplitSpec, n: int) -> list[str]:
    """Method per index ('real' or a forgery): exact fake ratio, methods balanced."""
    n_fake = int(round(n * spec.fake_ratio))
    methods = [spec.methods[i % len(spec.methods)] for i in range(n_fake)]
    plan = np.array(methods + [REAL] * (n - n_fake), dtype=object)
    np.random.default_rng([seed, spec.code, 0, 0]).shuffle(plan)
    return [str(m) for m in plan]


def _pool_context():
    # fork: workers need nothing from the caller's __main__, so callers need no
    # `if __name__ == "__main__"` guard (spawn/forkserver would re-import it)
    if "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context()


def _check_root(root: Path) -> None:
    """Refuse to replace a folder that is not a previous demo (it could hold real data)."""
    if root.exists() and not root.is_dir():
        raise DataError(f"demo root {root} exists and is not a folder")
    if root.is_dir() and any(root.iterdir()) and not (root / "methods.csv").is_file():
        raise DataError(
            f"demo root {root} is a non-empty folder without methods.csv; "
            "refusing to replace it (choose another path or remove it)")


def _write_csv(path: Path, header: str, rows) -> None:
    path.write_text(header + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows),
                    encoding="utf-8")


def write_demo_dataset(root: Path, *, seed: int, n_train: int = 600, n_val: int = 300,
                       n_test: int = 300, min_size: int = 200, max_size: int = 400,
                       workers: int = 1) -> dict:
    """Write the demo under `root` and return a summary dict (counts per split, per method, fake ratios).

    The whole tree is built in a temporary sibling folder and renamed to `root` at the
    end, so a killed run leaves no `root` that looks finished. An existing `root` is
    replaced only if it looks like an earlier demo (has methods.csv) or is empty.
    """
    root = Path(root)
    counts = {"n_train": n_train, "n_val": n_val, "n_test": n_test}
    # the schema's rules and messages: a direct call fails as the same value in a config would
    check_values({"seed": seed, "data": {"demo": {**counts, "min_size": min_size, "max_size": max_size}}},
                 workers=workers)
    _check_root(root)
    sizes = dict(zip((s.name for s in SPLITS), counts.values()))
    plans = {s.name: _plan_split(seed, s, sizes[s.name]) for s in SPLITS}
    tasks = [(seed, s.code, i, m, min_size, max_size)
             for s in SPLITS for i, m in enumerate(plans[s.name])]

    summary: dict = {
        "seed": int(seed), "image_size": [min_size, max_size],
        "jpeg_quality": list(JPEG_QUALITY_RANGE), "train_methods": list(TRAIN_METHODS),
        "held_out_methods": list(HELD_OUT_METHODS), "splits": {},
    }
    with atomic_path(root, is_dir=True) as tmp:
        if workers == 1:
            blobs = map(_render_task, tasks)
            pool = None
        else:
            pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=_pool_context())
            blobs = pool.map(_render_task, tasks, chunksize=max(1, len(tasks) // (workers * 8)))
        try:
            method_rows = []
            for spec in SPLITS:
                image_dir = tmp / spec.phase / spec.name
                image_dir.mkdir(parents=True)
                label_rows = []
                for method, blob in zip(plans[spec.name], blobs):
                    name = hashlib.md5(blob).hexdigest() + ".jpg"
                    if (image_dir / name).exists():  # would silently drop an image
                        raise RuntimeError(f"duplicate demo image {name} in {spec.name}")
                    (image_dir / name).write_bytes(blob)
                    label_rows.append((name, int(method != REAL)))
                    method_rows.append((name, spec.name, method))
                phase_dir = tmp / spec.phase
                _write_csv(phase_dir / spec.label_file, "img_name,target", label_rows)
                if spec.nolabel_file:
                    _write_csv(phase_dir / spec.nolabel_file, "img_name",
                               [(name,) for name, _ in label_rows])
                plan = plans[spec.name]
                n_fake = sum(t for _, t in label_rows)
                summary["splits"][spec.name] = {
                    "dir": f"{spec.phase}/{spec.name}",
                    "label_file": f"{spec.phase}/{spec.label_file}",
                    "n": len(plan), "n_fake": n_fake, "n_real": len(plan) - n_fake,
                    "fake_ratio": n_fake / len(plan),
                    "methods": {m: plan.count(m) for m in (REAL,) + spec.methods},
                }
            _write_csv(tmp / "methods.csv", "img_name,split,method", method_rows)
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
    return summary
