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
from .imageio import picture_box, picture_shift

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


def picture_shifts(index: pd.DataFrame, size: int, resize: str) -> np.ndarray:
    """(N, 2) int64: where each cached square's pixel (0, 0) lies in its original image
    (see imageio.picture_shift); 0 for an index without the original sizes."""
    if not all(c in index.columns for c in SIZE_COLUMNS):
        return np.zeros((len(index), 2), np.int64)
    widths, heights = index["orig_width"].to_numpy(), index["orig_height"].to_numpy()
    return np.array([picture_shift(resize, int(w), int(h), size) for w, h in zip(widths, heights, strict=True)],
                    dtype=np.int64).reshape(-1, 2)


def _aligned_range(lo: np.ndarray, hi: np.ndarray, shift: np.ndarray, align: int) -> tuple[np.ndarray, np.ndarray]:
    """First origin in [lo, hi] with (origin + shift) % align == 0, and how many there are
    (0 where none: a range shorter than `align` that misses the grid)."""
    first = lo + (-(lo + shift)) % align
    count = np.where(first <= hi, (hi - first) // align + 1, 0)
    return first, count


def grid_per_side(length: int, crop: int) -> int:
    """Crops along one side that cover `length` pixels with `crop` crops."""
    return max(1, math.ceil(length / crop))


def random_origins(boxes: np.ndarray, crop: int, rng: np.random.Generator,
                   shifts: np.ndarray | None = None, align: int = 1) -> np.ndarray:
    """(B, 2) top-left corners (x, y) of one random crop inside each box.

    With `align` > 1 the corner is drawn among the positions that fall on multiples of
    `align` in the original image (`shifts`: see picture_shifts): with 8, the JPEG block grid
    lies at the same place in every crop, so a region compressed on another grid stands out.
    """
    u = rng.random((len(boxes), 2))
    corners = []
    for axis in range(2):
        lo, length = boxes[:, axis], boxes[:, axis + 2]
        hi = lo + np.maximum(length - crop, 0)
        free = lo + np.floor(u[:, axis] * (hi - lo + 1)).astype(np.int64)
        if align > 1:
            first, count = _aligned_range(lo, hi, shifts[:, axis], align)
            free = np.where(count > 0, first + np.floor(u[:, axis] * count).astype(np.int64) * align, free)
        corners.append(free)
    return np.stack(corners, axis=1)


def grid_origins(box: np.ndarray, crop: int, per_side: int | None = None,
                 shift: np.ndarray | None = None, align: int = 1) -> np.ndarray:
    """(n, 2) corners of crops spread evenly over one box, overlapping where they must.

    `per_side` crops along each side, or None: the fewest that cover the box (a 500x300
    picture with 192 px crops gets 3 x 2), so small pictures cost few crops. With `align`,
    the corners are spread evenly over the positions on that grid of the original image
    inside the box, as in training (see random_origins); edge strips narrower than `align`
    may then go unscored. (A crop size that is a multiple of `align`, as the config
    requires, keeps the crop count of the unaligned grid.)
    """
    steps = []
    for axis in range(2):
        lo, length = int(box[axis]), int(box[axis + 2])
        hi = lo + max(length - crop, 0)
        count = per_side or grid_per_side(length, crop)
        positions = np.linspace(lo, hi, count).round().astype(np.int64)
        if align > 1:
            first, on_grid = _aligned_range(np.int64(lo), np.int64(hi), np.int64(shift[axis]), align)
            if on_grid > 0:
                if per_side is None:  # enough crops that steps rounded to the grid leave no gap
                    count = max(count, 1 + math.ceil((on_grid - 1) / max(1, crop // align)))
                steps_on_grid = np.linspace(0, on_grid - 1, count).round().astype(np.int64)
                positions = first + steps_on_grid * align
            positions = np.unique(positions)  # one crop per grid position
        steps.append(positions)
    xs, ys = steps
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
