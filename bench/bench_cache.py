"""Benchmark: per-epoch image loading, public baseline vs. the resized uint8 cache.

Side by side, on the same generated JPEGs and the same number of worker processes:

* baseline     what the public baseline pays in *every* epoch: per image
               `Image.open(p).convert("RGB").resize((size, size))`, batched by a
               DataLoader-like pool of workers (torch-free, so only the decoding is timed);
* cache build  `build_cache(...)`, paid once;
* cache read   random batches of 64 from the finished cache through memmap: what every
               epoch after the first pays.

The last line is `ratio=<cache read images/s / baseline images/s>`; the line before it
gives the one-off build against one baseline epoch. The cache is read right after it was
written, so it sits in the page cache; a cache larger than RAM reads at disk speed instead.

    python bench/bench_cache.py --n 600 --src-size 768 --size 256 --workers 2
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from deepfake_workflow.cache import build_cache, open_cache

BATCH = 64


def make_jpegs(folder: Path, n: int, src_size: int, seed: int = 0) -> list[str]:
    """n photo-like JPEGs (q90), sides drawn from [2/3, 4/3] x src_size."""
    rng = np.random.default_rng(seed)
    names = []
    for _ in range(n):
        width, height = (int(rng.integers(src_size * 2 // 3, src_size * 4 // 3 + 1)) for _ in range(2))
        # Smooth structure plus sensor-like noise: decodes like a photo, not like pure noise.
        coarse = Image.fromarray(rng.integers(0, 256, (height // 32 + 2, width // 32 + 2, 3), dtype=np.uint8))
        arr = np.asarray(coarse.resize((width, height), Image.Resampling.BICUBIC), dtype=np.int16)
        arr = np.clip(arr + rng.integers(-8, 9, arr.shape, dtype=np.int16), 0, 255).astype(np.uint8)
        name = f"{rng.bytes(16).hex()}.jpg"
        Image.fromarray(arr).save(folder / name, quality=90)
        names.append(name)
    return names


def _baseline_batch(args: tuple[str, list[str], int]) -> np.ndarray:
    folder, names, size = args
    return np.stack(
        [np.asarray(Image.open(os.path.join(folder, n)).convert("RGB").resize((size, size))) for n in names]
    )


def _noop(_: int) -> None:
    return None


def time_baseline(folder: Path, names: list[str], size: int, workers: int) -> tuple[float, float]:
    """(images/s of one baseline epoch, shuffled batches of 64, start-up excluded; start-up s)."""
    order = np.random.default_rng(1).permutation(len(names))
    batches = [
        (str(folder), [names[i] for i in order[s : s + BATCH]], size) for s in range(0, len(names), BATCH)
    ]
    spawn_started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        pool.map(_noop, range(workers))  # workers up and importing done
        started = time.perf_counter()
        startup = started - spawn_started
        count = sum(len(batch) for batch in pool.imap(_baseline_batch, batches))
        seconds = time.perf_counter() - started
    return count / seconds, startup


def time_cache_read(cache_dir: Path, min_seconds: float = 1.0) -> float:
    """Images/s reading shuffled batches of 64 from the memmap (whole epochs, >= min_seconds)."""
    images, _ = open_cache(cache_dir)
    rng = np.random.default_rng(2)
    count, started = 0, time.perf_counter()
    while True:
        order = rng.permutation(len(images))
        for s in range(0, len(order), BATCH):
            batch = np.ascontiguousarray(images[np.sort(order[s : s + BATCH])])
            count += len(batch)
        seconds = time.perf_counter() - started
        if seconds >= min_seconds:
            return count / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=600, help="number of JPEGs (default 600)")
    parser.add_argument("--src-size", type=int, default=768, help="typical source side in px (default 768)")
    parser.add_argument("--size", type=int, default=256, help="cache side in px (default 256, as the baseline)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes for both (default 2)")
    parser.add_argument("--resize", default="squash", help="cache resize mode (default squash, as the baseline)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_cache_") as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        t0 = time.perf_counter()
        names = make_jpegs(folder, args.n, args.src_size)
        mb = sum((folder / n).stat().st_size for n in names) / 1e6
        print(f"generated {args.n} JPEGs (~{args.src_size} px, q90, {mb:.0f} MB) in {time.perf_counter() - t0:.1f} s")
        print(f"size={args.size} resize={args.resize} workers={args.workers} cpus={os.cpu_count()}")

        baseline, startup = time_baseline(folder, names, args.size, args.workers)
        items = pd.DataFrame({"img_name": names, "target": 0})
        started = time.perf_counter()
        build_cache(
            items, folder, Path(tmp) / "cache", size=args.size, resize=args.resize,
            workers=args.workers, progress=False,
        )
        build_seconds = time.perf_counter() - started  # includes worker start-up
        build = args.n / build_seconds
        build_warm = args.n / max(build_seconds - startup, 1e-9)
        read = time_cache_read(Path(tmp) / "cache")

    print()
    print(f"{'path':<38}{'images/s':>12}{'x baseline':>12}")
    for label, rate in [
        ("baseline epoch (decode + resize)", baseline),
        ("cache build (once)", build),
        (f"  same, minus {startup:.1f} s worker start-up", build_warm),
        ("cache read epoch (memmap, batch 64)", read),
    ]:
        print(f"{label:<38}{rate:>12.1f}{rate / baseline:>12.2f}")
    print()
    print(f"build_vs_baseline={build / baseline:.3f}")
    print(f"ratio={read / baseline:.3f}")


if __name__ == "__main__":
    main()
