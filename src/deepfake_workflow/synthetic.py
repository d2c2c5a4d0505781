"""Synthetic fakes made on the fly from real training images (after self-blended images,
Shiohara & Yamasaki, CVPR 2022).

A real image becomes a fake by blending a perturbed copy of itself back in through a random
blob-shaped mask: the only difference from the real image is a local inconsistency (colour,
sharpness, resampling or noise) and a blending boundary, the generic traces that manipulations
never seen in training also leave. Config `train.synthetic_fakes`:

  p        probability that a real image of a training batch is turned into a fake
  area     [min, max] fraction of the image the mask covers
  feather  [min, max] Gaussian blur (px) of the mask's edge; 0 = a hard edge
  blend    [min, max] opacity of the perturbed copy inside the mask

The perturbation is 1 to 3 of: colour and brightness/contrast shift, down- then up-sampling,
sharpening, blurring, added noise. Everything is drawn from the batch's random generator, so
a batch's fakes depend only on its seed.
"""
from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

from .config import validate_section

_UP_FILTERS = (Image.Resampling.BILINEAR, Image.Resampling.BICUBIC, Image.Resampling.NEAREST)


class SyntheticFakes:
    """Turns some real images of a uint8 batch into synthetic fakes (see the module doc)."""

    def __init__(self, cfg: dict | None = None):
        cfg = validate_section("train", {"synthetic_fakes": cfg or {}})["synthetic_fakes"]
        self.p = float(cfg["p"])
        self.area = tuple(float(v) for v in cfg["area"])
        self.feather = tuple(float(v) for v in cfg["feather"])
        self.blend = tuple(float(v) for v in cfg["blend"])

    @property
    def active(self) -> bool:
        return self.p > 0

    def apply(self, images: np.ndarray, targets: np.ndarray, rng: np.random.Generator):
        """(images, targets) with the chosen reals replaced by fakes (target 1); inputs untouched."""
        chosen = (targets == 0) & (rng.random(len(targets)) < self.p)
        if not chosen.any():
            return images, targets
        images, targets = np.array(images, copy=True), np.array(targets, copy=True)
        for i in np.flatnonzero(chosen):
            images[i] = self.make_fake(images[i], rng)
            targets[i] = 1
        return images, targets

    def make_fake(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One uint8 (H,W,3) image blended with a perturbed copy of itself."""
        alpha = self.mask(image.shape[0], image.shape[1], rng)[..., None]
        original = image.astype(np.float32)
        out = original + alpha * (perturb(original, rng) - original)
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)

    def mask(self, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
        """float32 (h,w) in [0, max opacity]: 1-3 random ellipses grown to the drawn area,
        edge blurred by the drawn feather."""
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        yy, xx = yy / h, xx / w
        target_area = rng.uniform(*self.area)
        distance = np.full((h, w), np.inf, np.float32)
        for _ in range(int(rng.integers(1, 4))):
            cy, cx = rng.uniform(0.2, 0.8, 2)
            ry, rx = rng.uniform(0.5, 1.5, 2)
            theta = rng.uniform(0, np.pi)
            u = (xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)
            v = -(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)
            distance = np.minimum(distance, np.sqrt((u / rx) ** 2 + (v / ry) ** 2))
        # the union of ellipses, scaled together until it covers the drawn area
        threshold = np.quantile(distance, min(max(target_area, 1.0 / distance.size), 1.0))
        mask = (distance <= threshold).astype(np.float32)
        sigma = rng.uniform(*self.feather)
        if sigma > 0:
            mask = ndimage.gaussian_filter(mask, sigma)
            mask /= max(float(mask.max()), 1e-6)
        return mask * rng.uniform(*self.blend)


def perturb(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A float32 (H,W,3) copy changed by 1-3 random operations (see the module doc)."""
    x = image
    for op in rng.permutation(5)[: int(rng.integers(1, 4))]:
        if op == 0:  # colour and brightness/contrast
            x = x * rng.uniform(0.85, 1.15, 3).astype(np.float32) + rng.uniform(-15, 15, 3).astype(np.float32)
        elif op == 1:  # down- then up-sampling: an interpolated, smoother region
            h, w = x.shape[:2]
            f = rng.uniform(0.4, 0.8)
            small = Image.fromarray(np.clip(np.rint(x), 0, 255).astype(np.uint8)).resize(
                (max(4, round(w * f)), max(4, round(h * f))), Image.Resampling.BILINEAR)
            x = np.asarray(small.resize((w, h), _UP_FILTERS[int(rng.integers(3))]), np.float32)
        elif op == 2:  # sharpening (unsharp mask)
            x = x + rng.uniform(0.5, 1.5) * (x - ndimage.gaussian_filter(x, (1.0, 1.0, 0)))
        elif op == 3:  # blurring
            s = rng.uniform(0.6, 1.5)
            x = ndimage.gaussian_filter(x, (s, s, 0))
        else:  # sensor-like noise of another level
            x = x + rng.normal(0, rng.uniform(2, 6), x.shape).astype(np.float32)
    return x
