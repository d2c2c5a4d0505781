"""Score arbitrary image files with trained fold models (image paths in, P(fake) out).

The images go through the same decode + resize as the cache, so a model sees at scoring
time exactly what it saw in training.
"""
from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import DataError
from .imageio import ImageReadError, load_rgb_and_size, picture_box, picture_shift
from .labels import IMAGE_SUFFIXES

ON_BAD_IMAGE = ("stop", "skip")


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
    """Mean P(fake) over the given checkpoints, one row per path (img_name = path as given);
    the first unreadable image is an error."""
    return score_images(paths, checkpoints, size=size, resize=resize, tta=tta, device=device,
                        batch_size=batch_size).scores


@dataclass
class ScoreResult:
    scores: pd.DataFrame  # img_name, y_pred: one row per readable image, in input order
    bad: pd.DataFrame  # img_name, reason: the images that could not be read (on_bad_image="skip")


def score_images(paths: list[Path], checkpoints: list[Path], *, size: int | None = None, resize: str | None = None,
                 tta: str = "none", device: str = "auto", batch_size: int = 64, workers: int = 1,
                 on_bad_image: str = "stop", progress: bool = False) -> ScoreResult:
    """Mean P(fake) over the given checkpoints for every image of `paths`.

    Images are decoded by `workers` threads (PIL releases the GIL while decoding), a bounded
    chunk at a time so any number of images fits in memory. `on_bad_image`: "stop" raises the
    first ImageReadError (in input order); "skip" leaves unreadable images out of the scores
    and lists them with the reason in `bad`. `progress`: a tqdm bar of images on stderr.
    """
    from tqdm.auto import tqdm

    from .checkpoint import load_checkpoint
    from .inference import predict_images

    if on_bad_image not in ON_BAD_IMAGE:
        raise ValueError(f"on_bad_image must be one of {ON_BAD_IMAGE}, not {on_bad_image!r}")
    models = [load_checkpoint(c) for c in checkpoints]
    meta = models[0][1]
    size = size or int(meta["image_size"])
    resize = resize or str(meta.get("resize", "squash"))

    def decode(path):
        try:
            return load_rgb_and_size(path, size, resize), None
        except ImageReadError as exc:
            if on_bad_image == "stop":
                raise
            return None, exc.reason

    names, scores, bad = [], [], []
    chunk_size = 4 * batch_size
    with ThreadPoolExecutor(max(1, workers)) as pool, \
            tqdm(total=len(paths), unit="img", desc="score", disable=not progress, file=sys.stderr) as bar:
        for start in range(0, len(paths), chunk_size):
            chunk = paths[start:start + chunk_size]
            decoded = []
            for path, (result, reason) in zip(chunk, pool.map(decode, chunk), strict=True):
                bar.update(1)
                if result is None:
                    bad.append((str(path), reason))
                else:
                    decoded.append((path, result))
            if not decoded:
                continue
            images = np.stack([array for _, (array, _) in decoded])
            boxes = np.array([picture_box(resize, w, h, size) for _, (_, (w, h)) in decoded], dtype=np.int64)
            shifts = np.array([picture_shift(resize, w, h, size) for _, (_, (w, h)) in decoded], dtype=np.int64)
            total = np.zeros(len(decoded), dtype=np.float64)
            for model, model_meta in models:
                total += predict_images(model, model_meta, images, batch_size=batch_size, tta=tta, device=device,
                                        progress=False, boxes=boxes, shifts=shifts)
            names += [str(p) for p, _ in decoded]
            scores.append(total / len(models))
    if not names:
        raise DataError(f"none of the {len(paths)} image(s) could be read, e.g. {bad[0][0]}: {bad[0][1]}")
    return ScoreResult(pd.DataFrame({"img_name": names, "y_pred": np.concatenate(scores)}),
                       pd.DataFrame(bad, columns=["img_name", "reason"]))
