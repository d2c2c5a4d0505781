"""The demo data set in the Multi-FFDI layout: one image from its key, split plans, writing.

An image is a pure function of (seed, split code, index), so workers can render in any order.
The tree is written atomically (see write_demo_dataset).
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import io
import multiprocessing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..atomic import atomic_path
from ..config import check_values
from ..errors import DataError
from .camera import Camera
from .forgeries import FORGERIES
from .scene import _render_scene

REAL = "real"
TRAIN_METHODS = ("self_blend", "upsample", "noise_mismatch")
HELD_OUT_METHODS = ("face_swap",)
JPEG_QUALITY_RANGE = (75, 97)  # inclusive


@dataclass(frozen=True)
class SplitSpec:
    """Where one split lives in the FFDI layout and how it is composed."""

    name: str  # folder name, also the `split` column of methods.csv
    code: int  # part of the per-image random key; never change (it would change the bytes)
    phase: str
    fake_ratio: float
    methods: tuple[str, ...]
    label_file: str  # ground truth (hidden truth for the test split)
    nolabel_file: str | None = None  # what the real test split ships instead of labels


SPLITS = (
    SplitSpec("trainset", 1, "phase1", 0.8, TRAIN_METHODS, "trainset_label.txt"),
    SplitSpec("valset", 2, "phase1", 0.6, TRAIN_METHODS + HELD_OUT_METHODS, "valset_label.txt"),
    SplitSpec(
        "testset1_seen", 3, "phase2", 0.6, TRAIN_METHODS + HELD_OUT_METHODS,
        "testset1_seen_label.txt", nolabel_file="testset1_seen_nolabel.txt",
    ),
)


# --------------------------------------------------------------------------- one image


def _image_rng(seed: int, split_code: int, index: int) -> np.random.Generator:
    # fixed-length key: SeedSequence pads entropy with zeros, so keys must not differ
    # only by trailing zeros
    return np.random.default_rng([seed, split_code, 1, index])


def render_image(seed: int, split_code: int, index: int, method: str,
                 min_size: int, max_size: int) -> bytes:
    """JPEG bytes of one demo image; `method` is 'real' or a key of FORGERIES."""
    rng = _image_rng(seed, split_code, index)
    # size and quality first: drawn identically whatever the label
    h, w = (int(x) for x in rng.integers(min_size, max_size + 1, 2))
    quality = int(rng.integers(JPEG_QUALITY_RANGE[0], JPEG_QUALITY_RANGE[1] + 1))
    scene, geometry = _render_scene(rng, h, w)
    camera = Camera.draw(rng)
    photo = camera.shoot(rng, scene)
    if method != REAL:
        photo = FORGERIES[method](rng, photo, geometry, camera)
    pixels = np.clip(photo * 255.0 + 0.5, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _render_task(args) -> bytes:
    return render_image(*args)


# --------------------------------------------------------------------------- the data set


def _plan_split(seed: int, spec: SplitSpec, n: int) -> list[str]:
    """Method per index ('real' or a forgery): exact fake ratio, methods balanced."""
    n_fake = int(round(n * spec.fake_ratio))
    methods = [spec.methods[i % len(spec.methods)] for i in range(n_fake)]
    plan = np.array(methods + [REAL] * (n - n_fake), dtype=object)
    np.random.default_rng([seed, spec.code, 0, 0]).shuffle(plan)
    return [str(m) for m in plan]


def _pool_context():
    # fork: workers need nothing from the caller's __main__, so callers need no
    # `if __name__ == "__main__"` guard (spawn/forkserver would re-import it)
    if "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context()


def _check_root(root: Path) -> None:
    """Refuse to replace a folder that is not a previous demo (it could hold real data)."""
    if root.exists() and not root.is_dir():
        raise DataError(f"demo root {root} exists and is not a folder")
    if root.is_dir() and any(root.iterdir()) and not (root / "methods.csv").is_file():
        raise DataError(
            f"demo root {root} is a non-empty folder without methods.csv; "
            "refusing to replace it (choose another path or remove it)")


def _write_csv(path: Path, header: str, rows) -> None:
    path.write_text(header + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows),
                    encoding="utf-8")


def write_demo_dataset(root: Path, *, seed: int, n_train: int = 600, n_val: int = 300,
                       n_test: int = 300, min_size: int = 200, max_size: int = 400,
                       workers: int = 1) -> dict:
    """Write the demo under `root` and return a summary dict (counts per split, per method, fake ratios).

    The whole tree is built in a temporary sibling folder and renamed to `root` at the
    end, so a killed run leaves no `root` that looks finished. An existing `root` is
    replaced only if it looks like an earlier demo (has methods.csv) or is empty.
    """
    root = Path(root)
    counts = {"n_train": n_train, "n_val": n_val, "n_test": n_test}
    # the schema's rules and messages: a direct call fails as the same value in a config would
    check_values({"seed": seed, "data": {"demo": {**counts, "min_size": min_size, "max_size": max_size}}},
                 workers=workers)
    _check_root(root)
    sizes = dict(zip((s.name for s in SPLITS), counts.values(), strict=True))
    plans = {s.name: _plan_split(seed, s, sizes[s.name]) for s in SPLITS}
    tasks = [(seed, s.code, i, m, min_size, max_size)
             for s in SPLITS for i, m in enumerate(plans[s.name])]

    summary: dict = {
        "seed": int(seed), "image_size": [min_size, max_size],
        "jpeg_quality": list(JPEG_QUALITY_RANGE), "train_methods": list(TRAIN_METHODS),
        "held_out_methods": list(HELD_OUT_METHODS), "splits": {},
    }
    with atomic_path(root, is_dir=True) as tmp:
        if workers == 1:
            blobs = map(_render_task, tasks)
            pool = None
        else:
            pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=_pool_context())
            blobs = pool.map(_render_task, tasks, chunksize=max(1, len(tasks) // (workers * 8)))
        try:
            method_rows = []
            for spec in SPLITS:
                image_dir = tmp / spec.phase / spec.name
                image_dir.mkdir(parents=True)
                label_rows = []
                # blobs is one iterator over every split: each split takes its own count from it
                for method, blob in zip(plans[spec.name], blobs, strict=False):
                    name = hashlib.md5(blob).hexdigest() + ".jpg"
                    if (image_dir / name).exists():  # would silently drop an image
                        raise RuntimeError(f"duplicate demo image {name} in {spec.name}")
                    (image_dir / name).write_bytes(blob)
                    label_rows.append((name, int(method != REAL)))
                    method_rows.append((name, spec.name, method))
                phase_dir = tmp / spec.phase
                _write_csv(phase_dir / spec.label_file, "img_name,target", label_rows)
                if spec.nolabel_file:
                    _write_csv(phase_dir / spec.nolabel_file, "img_name",
                               [(name,) for name, _ in label_rows])
                plan = plans[spec.name]
                n_fake = sum(t for _, t in label_rows)
                summary["splits"][spec.name] = {
                    "dir": f"{spec.phase}/{spec.name}",
                    "label_file": f"{spec.phase}/{spec.label_file}",
                    "n": len(plan), "n_fake": n_fake, "n_real": len(plan) - n_fake,
                    "fake_ratio": n_fake / len(plan),
                    "methods": {m: plan.count(m) for m in (REAL,) + spec.methods},
                }
            _write_csv(tmp / "methods.csv", "img_name,split,method", method_rows)
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
    return summary
