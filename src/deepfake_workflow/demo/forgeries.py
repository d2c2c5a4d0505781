"""Forgery traces, each added to a photo at the scale of the face (see the package docstring).

FORGERIES maps a method name to `f(rng, photo, geometry, camera) -> photo`, float32 HxWx3 in [0, 1].
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image
from scipy import ndimage

from .camera import Camera
from .scene import FaceGeometry, _ellipse_alpha, _render_scene


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
