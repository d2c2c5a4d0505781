"""The camera that photographs a rendered scene: optical blur and sensor noise."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class Camera:
    """Optics blur (pixels) and Poisson-Gaussian sensor noise: var = gain*I + read**2."""

    blur: float
    gain: float
    read: float

    @classmethod
    def draw(cls, rng) -> Camera:
        return cls(rng.uniform(0.35, 1.0), rng.uniform(0.0003, 0.004), rng.uniform(0.002, 0.012))

    def noise_std(self, img: np.ndarray) -> np.ndarray:
        return np.sqrt(self.gain * img + self.read ** 2)

    def shoot(self, rng, scene: np.ndarray) -> np.ndarray:
        img = ndimage.gaussian_filter(scene, sigma=(self.blur, self.blur, 0))
        noise = rng.standard_normal(img.shape, dtype=np.float32)
        # partly luminance-correlated, as after demosaicing
        noise = 0.6 * noise + 0.4 * noise.mean(axis=2, keepdims=True) * math.sqrt(3)
        return np.clip(img + noise * self.noise_std(img), 0, 1)
