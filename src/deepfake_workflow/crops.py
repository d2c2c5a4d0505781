"""Crops of native pixels: random crops for training, a grid of crops for scoring.

Resizing is a low-pass filter: it blurs away the up-sampling, blending and noise traces of
local edits. With `train.crop_size` the model sees the cached pixels unresampled: training
takes one random crop per image (inside the picture, never in the cache's black padding);
scoring covers the picture with a grid of crops and pools their scores with a soft maximum,
because an image is fake when *one* region of it is edited.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from .errors import DataError
from .imageio import picture_box

SIZE_COLUMNS = ("orig_width", "orig_height")


def picture_boxes(index: pd.DataFrame, size: int, resize: str) -> np.ndarray:
    """(N, 4) int64 boxes x0, y0, w, h of each cached picture (see imageio.picture_box).

    A cache index without the original sizes (an old cache) counts as filling the square.
    """
    if not all(c in index.columns for c in SIZE_COLUMNS):
        return np.tile(np.array([0, 0, size, size], np.int64), (len(index), 1))
    widths = index["orig_width"].to_numpy()
    heights = index["orig_height"].to_numpy()
    return np.array([picture_box(resize, int(w), int(h), size) for w, h in zip(widths, heights)],
                    dtype=np.int64).reshape(-1, 4)


def grid_per_side(size: int, crop: int) -> int:
    """Crops per side that cover a `size` square with `crop` crops (the `auto` grid)."""
    return max(1, math.ceil(size / crop))


def random_origins(boxes: np.ndarray, crop: int, rng: np.random.Generator) -> np.ndarray:
    """(B, 2) top-left corners (x, y) of one random crop inside each box."""
    x0, y0, w, h = (boxes[:, i] for i in range(4))
    u = rng.random((len(boxes), 2))
    x = x0 + np.floor(u[:, 0] * (np.maximum(w - crop, 0) + 1)).astype(np.int64)
    y = y0 + np.floor(u[:, 1] * (np.maximum(h - crop, 0) + 1)).astype(np.int64)
    return np.stack([x, y], axis=1)


def grid_origins(box: np.ndarray, crop: int, per_side: int) -> np.ndarray:
    """(per_side**2, 2) corners of crops spread evenly over one box (overlapping if small)."""
    x0, y0, w, h = (int(v) for v in box)
    xs = np.linspace(x0, x0 + max(w - crop, 0), per_side).round().astype(np.int64)
    ys = np.linspace(y0, y0 + max(h - crop, 0), per_side).round().astype(np.int64)
    return np.array([(x, y) for y in ys for x in xs], dtype=np.int64)


def cut(images: np.ndarray, rows: np.ndarray, origins: np.ndarray, boxes: np.ndarray, crop: int) -> np.ndarray:
    """uint8 (B, crop, crop, 3): the crop of image rows[i] at origins[i], clipped to its box
    (zeros beyond a picture smaller than the crop). Reads only the crop from a memmap."""
    out = np.zeros((len(rows), crop, crop, 3), np.uint8)
    for i, (row, (x, y), box) in enumerate(zip(rows, origins, boxes)):
        x1 = min(x + crop, box[0] + box[2])
        y1 = min(y + crop, box[1] + box[3])
        out[i, : y1 - y, : x1 - x] = images[row, y:y1, x:x1]
    return out


def check_crop_size(crop: int | None, size: int) -> None:
    if crop is not None and crop > size:
        raise DataError(f"train.crop_size {crop} is larger than the cached images ({size} px): "
                        f"lower it or raise cache.size")


def pool_crops(log_p: torch.Tensor, n_crops: int) -> torch.Tensor:
    """(B*n, 2) log-probabilities of crops -> (B, 2) per image.

    The image's fake log-odds is the log-mean-exp of its crops' log-odds: near the mean when
    all crops agree, near the maximum when one crop is clearly fake (a local edit).
    """
    if n_crops == 1:
        return log_p
    z = (log_p[:, 1] - log_p[:, 0]).view(-1, n_crops)
    pooled = torch.logsumexp(z, dim=1) - math.log(n_crops)
    return torch.stack([torch.nn.functional.logsigmoid(-pooled), torch.nn.functional.logsigmoid(pooled)], dim=1)
