"""Training augmentation, split where each part is cheapest.

Random parameters for a whole batch are drawn at once from a numpy Generator (so a
batch's augmentation depends only on its seed, not on the worker that loads it).
JPEG re-compression needs PIL and runs on uint8 images in the loader workers;
flips, random resized crop and colour jitter run batched on float tensors on the
training device, after the uint8 batch has been copied there.

Config (`train.augment`):
  hflip, vflip      probability of a horizontal / vertical flip
  rrc_scale         [min, max] area fraction of a random crop resized back to the
                    full size; [1, 1] = off. Keep it near 1: resampling is a low-pass
                    filter that blurs the traces a detector looks for.
  jpeg_p            probability of re-compressing an image as JPEG ...
  jpeg_quality      ... at a quality drawn uniformly from [lo, hi]
  color_jitter      strength s: brightness, contrast and saturation factors drawn
                    from [1-s, 1+s]; 0 = off
"""
from __future__ import annotations

import io
import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .config import validate_section

_RATIO_RANGE = (math.log(3 / 4), math.log(4 / 3))
_GRAY = (0.299, 0.587, 0.114)


class Augmenter:
    """Draws and applies the augmentation described by a `train.augment` dict."""

    def __init__(self, cfg: dict | None = None):
        cfg = validate_section("train", {"augment": cfg or {}})["augment"]
        self.hflip = float(cfg["hflip"])
        self.vflip = float(cfg["vflip"])
        self.jpeg_p = float(cfg["jpeg_p"])
        self.rrc_scale = tuple(float(v) for v in cfg["rrc_scale"])
        self.jpeg_quality = tuple(int(v) for v in cfg["jpeg_quality"])
        jitter = cfg["color_jitter"]
        self.color_jitter = float(jitter)

    @property
    def crops(self) -> bool:
        return self.rrc_scale != (1.0, 1.0)

    @property
    def active(self) -> bool:
        return bool(self.hflip or self.vflip or self.jpeg_p or self.crops or self.color_jitter)

    def sample(self, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Random parameters for a batch of `n` images. The same number of draws is
        made whatever is switched on, so toggling one option leaves the others' draws
        unchanged."""
        u = rng.random((n, 9))
        lo, hi = self.rrc_scale
        area = lo + (hi - lo) * u[:, 2]
        # aspect ratio limited so that both sides fit: the crop keeps the drawn area
        low = np.maximum(_RATIO_RANGE[0], np.log(area))
        high = np.minimum(_RATIO_RANGE[1], -np.log(area))
        ratio = np.exp(low + (high - low) * u[:, 3])
        width = np.minimum(np.sqrt(area * ratio), 1.0)   # crop half-size in [-1, 1] coords
        height = np.minimum(np.sqrt(area / ratio), 1.0)
        cx = (1 - width) * (2 * u[:, 4] - 1)
        cy = (1 - height) * (2 * u[:, 5] - 1)
        q_lo, q_hi = self.jpeg_quality
        quality = rng.integers(q_lo, q_hi + 1, size=n)
        jpeg = rng.random(n) < self.jpeg_p
        factors = 1 + self.color_jitter * (2 * u[:, 6:9] - 1)
        return {
            "hflip": u[:, 0] < self.hflip,
            "vflip": u[:, 1] < self.vflip,
            "crop": np.stack([width, height, cx, cy], axis=1).astype(np.float32),
            "jpeg_quality": np.where(jpeg, quality, 0).astype(np.int64),
            "jitter": factors.astype(np.float32),
        }

    def apply_uint8(self, images: np.ndarray, params: dict) -> np.ndarray:
        """JPEG re-compression of the chosen images of a uint8 (N,H,W,3) batch."""
        qualities = params["jpeg_quality"]
        if not np.any(qualities):
            return images
        out = np.array(images, copy=True)
        for i in np.flatnonzero(qualities):
            out[i] = jpeg_roundtrip(out[i], int(qualities[i]))
        return out

    def apply_tensor(self, x: torch.Tensor, params: dict) -> torch.Tensor:
        """Flips, random resized crop and colour jitter of a float (N,3,H,W) batch in
        [0, 1] (any device). `params` values may be numpy arrays or tensors."""
        def t(name, dtype):
            return torch.as_tensor(params[name]).to(device=x.device, dtype=dtype, non_blocking=True)

        hflip, vflip = t("hflip", torch.bool), t("vflip", torch.bool)
        if self.crops:
            crop = t("crop", torch.float32)
            theta = torch.zeros(x.shape[0], 2, 3, device=x.device, dtype=torch.float32)
            # a negative scale mirrors the sampling grid: flip and crop in one resampling
            theta[:, 0, 0] = crop[:, 0] * torch.where(hflip, -1.0, 1.0)
            theta[:, 1, 1] = crop[:, 1] * torch.where(vflip, -1.0, 1.0)
            theta[:, 0, 2], theta[:, 1, 2] = crop[:, 2], crop[:, 3]
            grid = F.affine_grid(theta, list(x.shape), align_corners=False)
            x = F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="reflection",
                              align_corners=False)
        else:
            if self.hflip:
                x = torch.where(hflip[:, None, None, None], x.flip(3), x)
            if self.vflip:
                x = torch.where(vflip[:, None, None, None], x.flip(2), x)
        if self.color_jitter:
            x = color_jitter(x, t("jitter", x.dtype))
        return x

    def __call__(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The whole pipeline on a uint8 (N,H,W,3) or (H,W,3) array, on the CPU; returns
        uint8 of the same shape. For inspection and tests; training splits the work."""
        single = images.ndim == 3
        batch = images[None] if single else images
        params = self.sample(len(batch), rng)
        batch = self.apply_uint8(batch, params)
        x = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).float() / 255
        x = self.apply_tensor(x, params)
        out = (x * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        return out[0] if single else out


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """Encode a uint8 (H,W,3) image as JPEG at `quality` and decode it again."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"))


def color_jitter(x: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Brightness, contrast, saturation (factors (N,3)) of float images in [0, 1]."""
    weights = torch.tensor(_GRAY, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    brightness, contrast, saturation = (factors[:, i].view(-1, 1, 1, 1) for i in range(3))
    x = (x * brightness).clamp(0, 1)
    mean = (x * weights).sum(1, keepdim=True).mean((2, 3), keepdim=True)
    x = ((x - mean) * contrast + mean).clamp(0, 1)
    gray = (x * weights).sum(1, keepdim=True)
    return ((x - gray) * saturation + gray).clamp(0, 1)
