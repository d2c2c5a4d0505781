"""Score arbitrary image files with trained fold models (image paths in, P(fake) out).

The images go through the same decode + resize as the cache, so a model sees at scoring
time exactly what it saw in training.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .errors import DataError
from .imageio import load_rgb_and_size, picture_box
from .labels import IMAGE_SUFFIXES


def collect_image_paths(inputs: list[Path]) -> list[Path]:
    """Expand files, folders (images by suffix, any case, sorted) and .txt/.csv path lists."""
    paths: list[Path] = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            paths.extend(sorted(p for p in item.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES))
        elif item.suffix.lower() in (".txt", ".csv") and item.is_file():
            lines = [ln.strip() for ln in item.read_text(encoding="utf-8-sig").splitlines() if ln.strip()]
            if lines and lines[0].split(",")[0] in ("img_name", "path"):
                lines = lines[1:]
            paths.extend((item.parent / ln.split(",")[0]) for ln in lines)
        elif item.is_file():
            paths.append(item)
        else:
            raise DataError(f"input not found: {item}")
    if not paths:
        raise DataError(f"no images found in {', '.join(map(str, inputs))}")
    return paths


def score_paths(paths: list[Path], checkpoints: list[Path], *, size: int | None = None, resize: str | None = None,
                tta: str = "none", device: str = "auto", batch_size: int = 64) -> pd.DataFrame:
    """Mean P(fake) over the given checkpoints, one row per path (img_name = path as given)."""
    from .checkpoint import load_checkpoint
    from .inference import predict_images

    models = [load_checkpoint(c) for c in checkpoints]
    meta = models[0][1]
    size = size or int(meta["image_size"])
    resize = resize or str(meta.get("resize", "squash"))
    scores = np.zeros(len(paths), dtype=np.float64)
    # Decode a bounded chunk at a time so any number of images fits in memory.
    for start in range(0, len(paths), 16 * batch_size):
        chunk = paths[start:start + 16 * batch_size]
        decoded = [load_rgb_and_size(p, size, resize) for p in chunk]
        images = np.stack([array for array, _ in decoded])
        boxes = np.array([picture_box(resize, w, h, size) for _, (w, h) in decoded], dtype=np.int64)
        for model, model_meta in models:
            scores[start:start + len(chunk)] += predict_images(
                model, model_meta, images, batch_size=batch_size, tta=tta, device=device, progress=False,
                boxes=boxes)
    scores /= len(models)
    return pd.DataFrame({"img_name": [str(p) for p in paths], "y_pred": scores})
