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
import torch.nn.functional as F

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
    return np.array([picture_box(resize, int(w), int(h), size) for w, h in zip(widths, heights, strict=True)],
                    dtype=np.int64).reshape(-1, 4)


def grid_per_side(length: int, crop: int) -> int:
    """Crops along one side that cover `length` pixels with `crop` crops."""
    return max(1, math.ceil(length / crop))


def random_origins(boxes: np.ndarray, crop: int, rng: np.random.Generator) -> np.ndarray:
    """(B, 2) top-left corners (x, y) of one random crop inside each box."""
    x0, y0, w, h = (boxes[:, i] for i in range(4))
    u = rng.random((len(boxes), 2))
    x = x0 + np.floor(u[:, 0] * (np.maximum(w - crop, 0) + 1)).astype(np.int64)
    y = y0 + np.floor(u[:, 1] * (np.maximum(h - crop, 0) + 1)).astype(np.int64)
    return np.stack([x, y], axis=1)


def grid_origins(box: np.ndarray, crop: int, per_side: int | None = None) -> np.ndarray:
    """(n, 2) corners of crops spread evenly over one box, overlapping where they must.

    `per_side` crops along each side, or None: the fewest that cover the box (a 500x300
    picture with 192 px crops gets 3 x 2), so small pictures cost few crops.
    """
    x0, y0, w, h = (int(v) for v in box)
    nx = per_side or grid_per_side(w, crop)
    ny = per_side or grid_per_side(h, crop)
    xs = np.linspace(x0, x0 + max(w - crop, 0), nx).round().astype(np.int64)
    ys = np.linspace(y0, y0 + max(h - crop, 0), ny).round().astype(np.int64)
    return np.array([(x, y) for y in ys for x in xs], dtype=np.int64)


def cut(images: np.ndarray, rows: np.ndarray, origins: np.ndarray, boxes: np.ndarray, crop: int) -> np.ndarray:
    """uint8 (B, crop, crop, 3): the crop of image rows[i] at origins[i], clipped to its box
    (zeros beyond a picture smaller than the crop). Reads only the crop from a memmap."""
    out = np.zeros((len(rows), crop, crop, 3), np.uint8)
    for i, (row, (x, y), box) in enumerate(zip(rows, origins, boxes, strict=True)):
        x1 = min(x + crop, box[0] + box[2])
        y1 = min(y + crop, box[1] + box[3])
        out[i, : y1 - y, : x1 - x] = images[row, y:y1, x:x1]
    return out


def check_crop_size(crop: int | None, size: int) -> None:
    if crop is not None and crop > size:
        raise DataError(f"train.crop_size {crop} is larger than the cached images ({size} px): "
                        f"lower it or raise cache.size")


def pool_crops(log_p: torch.Tensor, counts: list[int] | None) -> torch.Tensor:
    """Log-probabilities of crops (sum(counts), 2) -> per image (len(counts), 2).

    The image's fake log-odds is the log-mean-exp of its crops' log-odds: near the mean when
    all crops agree, near the maximum when one crop is clearly fake (a local edit).
    """
    if counts is None:
        return log_p
    z = log_p[:, 1] - log_p[:, 0]
    pooled = torch.stack([torch.logsumexp(part, dim=0) - math.log(len(part)) for part in torch.split(z, counts)])
    return torch.stack([F.logsigmoid(-pooled), F.logsigmoid(pooled)], dim=1)
