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

`--vs-bare`: the cache build against the least work a resized cache needs, on the same files
with the same number of worker processes, alternating in one process (`--repeats` times each,
the best run of each side compared):

  bare     a bare pool (workers import only numpy and PIL): per image open, JPEG draft decode
           to the size the resize needs, one bicubic resize (`reducing_gap=None`, as the cache),
           pixels thrown away;
  ours     `build_cache(...)`: the same decode and resize, plus writing every row to images.npy,
           fsync, the index and bad-image lists.

Both are timed from the call to the end, worker start-up included. The default mode is
center_crop, the default of the real preset (configs/multi-ffdi.yaml). The last line is
`ratio=<ours/bare>`.

    python bench/bench_cache.py --vs-bare --n 3000 --src-size 800 --size 256 --workers 2
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

# pandas and deepfake_workflow are imported where used: spawned workers import this module
# again, and the bare side's workers must load no more than numpy and PIL.

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
    from deepfake_workflow.cache import open_cache

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


def _bare_decode(task: tuple[str, int, str]) -> None:
    """The least work one cached image needs: open, draft decode, one bicubic resize."""
    path, size, resize = task
    with Image.open(path) as im:
        width, height = im.size
        if resize == "native_crop":  # no resampling: decode whole, crop the centre
            left, top = max(0, (width - size) // 2), max(0, (height - size) // 2)
            np.asarray(im.crop((left, top, left + min(size, width), top + min(size, height))))
            return
        if resize == "squash":
            need = (size, size)
        else:
            scale = size / (min if resize == "center_crop" else max)(width, height)
            need = (max(1, round(width * scale)), max(1, round(height * scale)))
        im.draft("RGB", need)  # PIL keeps both sides >= need, as the cache's decoder asks
        if im.mode != "RGB":
            im = im.convert("RGB")
        width, height = im.size
        box = None
        if resize == "center_crop":
            side = min(width, height)
            box = ((width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2)
        out = (size, size) if resize != "letterbox" else need
        np.asarray(im.resize(out, Image.Resampling.BICUBIC, box=box, reducing_gap=None))


def _cpu_seconds() -> float:
    """CPU time of this process and of all its reaped descendants so far."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _stop_forkserver() -> None:
    """Stop (and reap) the forkserver build_cache started: its workers' CPU time then counts in
    RUSAGE_CHILDREN, and the next build starts one afresh, as every build_cache job does."""
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    if server is not None and hasattr(server, "_stop"):  # private API: best effort
        server._stop()


def time_bare(folder: Path, names: list[str], size: int, resize: str, workers: int) -> tuple[float, float]:
    """(images/s, CPU ms per image) of the bare pool, from its start (worker start-up included)."""
    tasks = [(str(folder / n), size, resize) for n in names]
    cpu, started = _cpu_seconds(), time.perf_counter()
    pool = multiprocessing.get_context("spawn").Pool(workers)
    for _ in pool.imap_unordered(_bare_decode, tasks, chunksize=8):
        pass
    pool.close()
    pool.join()
    seconds = time.perf_counter() - started
    return len(names) / seconds, (_cpu_seconds() - cpu) * 1000 / len(names)


def time_ours(folder: Path, names: list[str], out: Path, size: int, resize: str, workers: int) -> tuple[float, float]:
    """(images/s, CPU ms per image) of build_cache, from the call to its return (start-up included)."""
    import pandas as pd

    from deepfake_workflow.cache import build_cache

    items = pd.DataFrame({"img_name": names, "target": 0})
    cpu, started = _cpu_seconds(), time.perf_counter()
    build_cache(items, folder, out, size=size, resize=resize, workers=workers, progress=False)
    seconds = time.perf_counter() - started
    _stop_forkserver()
    # removed, so the next build does not first have to evict this one's pages from the page cache
    shutil.rmtree(out)
    return len(names) / seconds, (_cpu_seconds() - cpu) * 1000 / len(names)


def vs_bare(args: argparse.Namespace) -> None:
    resize = args.resize or "center_crop"
    with tempfile.TemporaryDirectory(prefix="bench_cache_") as tmp:
        if args.images:  # e.g. real photographs
            folder = args.images
            names = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))[: args.n]
            print(f"{len(names)} JPEGs of {folder}")
        else:
            folder = Path(tmp) / "images"
            folder.mkdir()
            t0 = time.perf_counter()
            names = make_jpegs(folder, args.n, args.src_size)
            mb = sum((folder / n).stat().st_size for n in names) / 1e6
            print(f"generated {args.n} JPEGs (~{args.src_size} px, q90, {mb:.0f} MB) "
                  f"in {time.perf_counter() - t0:.1f} s")
        print(f"size={args.size} resize={resize} workers={args.workers} cpus={os.cpu_count()} "
              f"load={os.getloadavg()[0]:.2f}")
        runs: dict[str, list[tuple[float, float]]] = {"bare": [], "ours": []}
        for rep in range(args.repeats):  # alternating: load from other jobs hits both alike
            runs["bare"].append(time_bare(folder, names, args.size, resize, args.workers))
            runs["ours"].append(time_ours(folder, names, Path(tmp) / "cache", args.size, resize, args.workers))
            (b, b_cpu), (o, o_cpu) = runs["bare"][-1], runs["ours"][-1]
            print(f"  run {rep + 1}: bare {b:.1f} images/s ({b_cpu:.2f} CPU ms/image), "
                  f"ours {o:.1f} images/s ({o_cpu:.2f} CPU ms/image)", flush=True)
        print(f"load={os.getloadavg()[0]:.2f} at the end")
    bare, ours = max(r[0] for r in runs["bare"]), max(r[0] for r in runs["ours"])
    bare_cpu, ours_cpu = (statistics.median(r[1] for r in runs[side]) for side in ("bare", "ours"))
    print()
    print(f"{'':<44}{'images/s':>12}{'CPU ms/image':>14}")
    print(f"{'':<44}{'(best)':>12}{'(median)':>14}")
    print(f"{'bare pool (draft decode + one resize)':<44}{bare:>12.1f}{bare_cpu:>14.2f}")
    print(f"{'build_cache (same, + write, fsync, index)':<44}{ours:>12.1f}{ours_cpu:>14.2f}")
    print()
    # CPU time per image barely moves with other jobs' load; wall time does, hence both
    print(f"cpu_ratio={bare_cpu / ours_cpu:.3f}")
    print(f"ratio={ours / bare:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=600, help="number of JPEGs (default 600)")
    parser.add_argument("--src-size", type=int, default=768, help="typical source side in px (default 768)")
    parser.add_argument("--size", type=int, default=256, help="cache side in px (default 256, as the baseline)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes for both (default 2)")
    parser.add_argument("--resize", default=None,
                        help="cache resize mode (default squash, as the baseline; --vs-bare: center_crop)")
    parser.add_argument("--vs-bare", action="store_true", help="build_cache against a bare decode + resize pool")
    parser.add_argument("--images", type=Path, help="--vs-bare: use the first --n JPEGs of this folder instead")
    parser.add_argument("--repeats", type=int, default=3, help="--vs-bare: runs of each side (default 3)")
    args = parser.parse_args()
    if args.vs_bare:
        vs_bare(args)
        return
    args.resize = args.resize or "squash"

    with tempfile.TemporaryDirectory(prefix="bench_cache_") as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        t0 = time.perf_counter()
        names = make_jpegs(folder, args.n, args.src_size)
        mb = sum((folder / n).stat().st_size for n in names) / 1e6
        print(f"generated {args.n} JPEGs (~{args.src_size} px, q90, {mb:.0f} MB) in {time.perf_counter() - t0:.1f} s")
        print(f"size={args.size} resize={args.resize} workers={args.workers} cpus={os.cpu_count()}")

        baseline, startup = time_baseline(folder, names, args.size, args.workers)
        import pandas as pd

        from deepfake_workflow.cache import build_cache

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
