"""The clean (noise-free) portrait: head geometry, background, face features, and noise helpers.

Every random number comes from the caller's generator, in a fixed order: drawing one more
number, or in another order, changes the bytes of every demo image.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage


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
