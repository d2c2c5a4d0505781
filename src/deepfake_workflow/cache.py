"""Build, once per split, a resized uint8 image cache that training reads through memmap.

Layout of a cache directory (written atomically: built in a temporary sibling, renamed
into place at the end):

* `images.npy`      (N, size, size, 3) uint8, row i is index row i (`np.load(mmap_mode="r")`)
* `index.csv`       img_name, target, <extra columns of `items`>, orig_width, orig_height
* `bad_images.csv`  img_name, error (header only when every image decoded)
* `cache_info.json` size, resize, counts, timing, library versions

Memory stays flat in N: each decoding process (the caller and `workers - 1` worker
processes) decodes a small chunk of images into one reused buffer and writes it straight
into `images.npy` with `os.pwrite` at the rows' offset; the caller only ever sees sizes and
error strings of the workers' chunks. Writing through the file (not a memmap) keeps the
rows out of every process's resident set. Where a row is a whole number of pages (sizes
that are multiples of 64: 128, 256, 384, 512) the chunks go to disk with direct I/O,
around the page cache: filling the page cache cost more system CPU than the decoding
leaves room for, and a 232 GB cache would only evict everything else from it. Other sizes,
and file systems that refuse direct I/O, write through the page cache. Bad images leave
zero rows behind; in skip mode these are squeezed out afterwards by copying the good
rows, a chunk at a time, into a second file.
"""
from __future__ import annotations

import concurrent.futures
import errno
import json
import mmap
import multiprocessing
import os
import platform
import struct
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path, PurePath

import numpy as np
import pandas as pd
import PIL
from tqdm import tqdm

from . import __version__
from .atomic import atomic_path, write_csv, write_json
from .config import check_values, schema_choices
from .diskspace import require_free_space
from .errors import DataError
from .imageio import ImageReadError, load_rgb_and_size

ON_BAD_IMAGE = schema_choices("cache.on_bad_image")  # the values build_cache accepts, for callers
IMAGES_FILE = "images.npy"
INDEX_FILE = "index.csv"
BAD_FILE = "bad_images.csv"
INFO_FILE = "cache_info.json"
_SIZE_COLUMNS = ["orig_width", "orig_height"]
_CHUNK_BYTES = 8 * 1024 * 1024  # per worker task: bounded memory, few syscalls
_MAX_CHUNK_IMAGES = 64
_ERRORS_SHOWN = 50
_PAGE = 4096  # direct I/O alignment (file offset, length, memory): a page covers every common block size


@dataclass
class CacheSummary:
    """What `build_cache` did. `images_per_s` counts every image attempted, bad ones too."""

    n_images: int
    n_bad: int
    size: int
    resize: str
    seconds: float
    images_per_s: float


def build_cache(
    items: pd.DataFrame,
    image_dir: Path,
    out_dir: Path,
    *,
    size: int,
    resize: str,
    on_bad_image: str = "error",
    workers: int = 1,
    max_pixels: int | None = 100_000_000,
    progress: bool = True,
) -> CacheSummary:
    """Decode every `items.img_name` under `image_dir` into a cache directory `out_dir`.

    `items` needs columns `img_name` and `target` (-1 for unlabelled); other columns are
    kept in index.csv. `on_bad_image="error"` decodes everything, then raises one
    DataError listing every unreadable file and leaves `out_dir` untouched; `"skip"`
    leaves bad images out and lists them in bad_images.csv (all bad is still an error).
    `workers` > 1 decodes in that many processes (this one included). Any existing
    `out_dir` is replaced only when the new cache is complete.
    """
    # the schema's rules and messages: a direct call fails as the same value in a config would
    check_values({"cache": {"size": size, "resize": resize, "on_bad_image": on_bad_image, "max_pixels": max_pixels}},
                 workers=workers)
    image_dir = Path(image_dir)
    out_dir = Path(out_dir)
    items = _check_items(items)
    if not image_dir.is_dir():
        raise DataError(f"image directory {image_dir} does not exist or is not a directory")

    started = time.perf_counter()
    n_total = len(items)
    # Before anything is written: the whole array, plus about 64 bytes per index row beyond the name.
    needed = n_total * size * size * 3 + int(items["img_name"].str.len().sum()) + 64 * n_total
    require_free_space(out_dir.parent, needed, f"the cache of {n_total:,} images at {size}x{size} px")
    with atomic_path(out_dir, is_dir=True) as tmp:
        images_path = tmp / IMAGES_FILE
        offset = _create_npy(images_path, n_total, size)
        job = _Job(str(images_path), offset, str(image_dir), size, resize, max_pixels)
        names = items["img_name"].tolist()
        widths = np.zeros(n_total, np.int64)
        heights = np.zeros(n_total, np.int64)
        errors: dict[int, str] = {}
        bar = tqdm(total=n_total, unit="img", desc=f"cache {out_dir.name}", disable=not progress)
        with bar:
            for start, results in _run_chunks(job, names, workers):
                for i, (width, height, error) in enumerate(results, start):
                    if error is None:
                        widths[i], heights[i] = width, height
                    else:
                        errors[i] = error
                bar.update(len(results))

        bad_rows = sorted(errors)
        bad = pd.DataFrame(
            {"img_name": [names[i] for i in bad_rows], "error": [errors[i] for i in bad_rows]}
        )
        if errors and (on_bad_image == "error" or len(errors) == n_total):
            raise DataError(_bad_images_message(bad, n_total, image_dir, on_bad_image))

        good = np.ones(n_total, bool)
        good[list(errors)] = False
        if errors:
            require_free_space(tmp, int(good.sum()) * job.row_bytes,
                               f"leaving out {len(errors)} bad image(s) (a copy of the good rows)")
            _compact_rows(images_path, offset, good, size)
        _fsync(images_path)

        index = items.loc[good].reset_index(drop=True)
        index["orig_width"] = widths[good]
        index["orig_height"] = heights[good]
        write_csv(index, tmp / INDEX_FILE)
        write_csv(bad, tmp / BAD_FILE)

        seconds = time.perf_counter() - started
        summary = CacheSummary(
            n_images=int(good.sum()),
            n_bad=len(errors),
            size=size,
            resize=resize,
            seconds=round(seconds, 3),
            images_per_s=round(n_total / seconds, 1) if seconds > 0 else float("inf"),
        )
        info = asdict(summary) | {
            "on_bad_image": on_bad_image,
            "max_pixels": max_pixels,
            "created_by": f"deepfake_workflow {__version__}",
            "pillow": PIL.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        }
        write_json(tmp / INFO_FILE, info)
    return summary


def open_cache(cache_dir: Path) -> tuple[np.ndarray, pd.DataFrame]:
    """Open a cache built by `build_cache`: (read-only memmap (N,S,S,3) uint8, index)."""
    cache_dir = Path(cache_dir)
    for name in (IMAGES_FILE, INDEX_FILE):
        if not (cache_dir / name).is_file():
            raise DataError(f"{cache_dir / name} is missing: is {cache_dir} a finished cache?")
    try:
        images = np.load(cache_dir / IMAGES_FILE, mmap_mode="r")
    except (ValueError, OSError) as exc:
        raise DataError(f"{cache_dir / IMAGES_FILE}: not a readable .npy array ({exc})") from exc
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
        raise DataError(
            f"{cache_dir / IMAGES_FILE}: expected (N, S, S, 3) uint8, "
            f"found {images.shape} {images.dtype}"
        )
    index = pd.read_csv(cache_dir / INDEX_FILE, dtype={"img_name": str})
    if len(index) != len(images):
        raise DataError(
            f"{cache_dir}: {INDEX_FILE} has {len(index)} rows but {IMAGES_FILE} has {len(images)}"
        )
    return images, index


# --------------------------------------------------------------------------- checks


def _check_items(items: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in ("img_name", "target") if c not in items.columns]
    if missing:
        raise DataError(f"image list lacks column(s) {missing}; it has {list(items.columns)}")
    if len(items) == 0:
        raise DataError("image list is empty: nothing to cache")
    # Recomputed from the files; a rebuilt index would otherwise carry stale copies.
    items = items.drop(columns=[c for c in _SIZE_COLUMNS if c in items.columns])
    extras = [c for c in items.columns if c not in ("img_name", "target")]
    items = items[["img_name", "target", *extras]].reset_index(drop=True)
    names = items["img_name"]
    for row, name in names.items():
        if not isinstance(name, str) or not name or _escapes(name):
            raise DataError(f"image list row {row}: img_name {name!r} is not a plain file name")
    dup = names[names.duplicated()]
    if len(dup):
        raise DataError(f"image list names {dup.iloc[0]!r} more than once ({len(dup)} duplicates)")
    targets = pd.to_numeric(items["target"], errors="coerce")
    bad_rows = targets.index[~targets.isin([-1, 0, 1])]
    if len(bad_rows):
        row = bad_rows[0]
        raise DataError(
            f"image list row {row} ({names[row]}): target {items['target'][row]!r} "
            "is not 0, 1 or -1 (unlabelled)"
        )
    items["target"] = targets.astype(np.int64)
    return items


def _escapes(name: str) -> bool:
    """True for names that would reach outside the image directory."""
    path = PurePath(name)
    return path.is_absolute() or ".." in path.parts


def _bad_images_message(bad: pd.DataFrame, n_total: int, image_dir: Path, mode: str) -> str:
    lines = [f"  {row.img_name}: {row.error}" for row in bad.head(_ERRORS_SHOWN).itertuples()]
    if len(bad) > _ERRORS_SHOWN:
        lines.append(f"  ... and {len(bad) - _ERRORS_SHOWN} more")
    if mode == "skip":
        head = f"all {n_total} images in {image_dir} are unreadable"
    else:
        head = (
            f"{len(bad)} of {n_total} images in {image_dir} are unreadable "
            "(set cache.on_bad_image: skip to leave them out)"
        )
    return head + ":\n" + "\n".join(lines)


# --------------------------------------------------------------------------- decoding


_Result = tuple[int, int, str | None]  # (orig width, orig height, error or None)


@dataclass(frozen=True)
class _Job:
    images_path: str
    offset: int  # bytes of .npy header before row 0
    image_dir: str
    size: int
    resize: str
    max_pixels: int | None

    @property
    def row_bytes(self) -> int:
        return self.size * self.size * 3


def _create_npy(path: Path, n_rows: int, size: int) -> int:
    """Create a zero-filled (sparse) .npy of n_rows images; return its header length.

    The header is padded to one page (numpy reads any header length), so rows of a
    page-multiple size start page aligned and can be written with direct I/O."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
              "shape": (n_rows, size, size, 3)}
    text = repr(header).encode("latin1")
    lead = np.lib.format.magic(1, 0)
    padding = _PAGE - len(lead) - 2 - len(text) - 1
    with open(path, "wb") as f:
        f.write(lead + struct.pack("<H", len(text) + padding + 1) + text + b" " * padding + b"\n")
        f.truncate(_PAGE + n_rows * size * size * 3)
    return _PAGE


def _chunks(names: list[str], job: _Job, workers: int) -> Iterator[tuple[int, list[str]]]:
    """Runs of consecutive rows: small enough to bound each process's buffer, shrinking near
    the end (guided scheduling) so that no process is left with a long last chunk."""
    largest = max(1, min(_MAX_CHUNK_IMAGES, _CHUNK_BYTES // job.row_bytes))
    start = 0
    while start < len(names):
        count = max(1, min(largest, (len(names) - start) // (4 * workers)))
        yield start, names[start : start + count]
        start += count


def _run_chunks(
    job: _Job, names: list[str], workers: int
) -> Iterator[tuple[int, list[_Result]]]:
    """Decode every chunk; results come in any order. With workers > 1 this process decodes
    too, beside workers - 1 worker processes, from the start, while they start up."""
    tasks = _chunks(names, job, workers)
    writer = _ChunkWriter(job)
    try:
        if workers == 1:
            for task in tasks:
                yield task[0], writer.decode(task)
            return
        context = _pool_context()
        starting = concurrent.futures.ThreadPoolExecutor(1)
        if context.get_start_method() == "fork":  # forked from this thread, while it is the only one
            pool_future = concurrent.futures.Future()
            pool_future.set_result(context.Pool(workers - 1, initializer=_worker_init, initargs=(job,)))
        else:
            # Pool() returns once the workers run (the forkserver first imports this module and the
            # caller's main: about half a second); started in a thread, it costs this process nothing.
            pool_future = starting.submit(context.Pool, workers - 1, initializer=_worker_init, initargs=(job,))
        pool = None
        try:
            queued: list = []
            while True:
                if pool is None and pool_future.done():
                    pool = pool_future.result()
                for done in [r for r in queued if r.ready()]:
                    queued.remove(done)
                    yield done.get()
                # Three tasks per worker not yet collected (one running, two waiting), so none
                # runs dry while this process decodes a chunk of its own.
                while pool is not None and len(queued) < 3 * (workers - 1) and (task := next(tasks, None)) is not None:
                    queued.append(pool.apply_async(_worker_chunk, (task,)))
                task = next(tasks, None)
                if task is None:
                    break
                yield task[0], writer.decode(task)
            for result in queued:
                yield result.get()
        finally:
            starting.shutdown()  # waits for the pool to have started, to stop it
            if pool_future.exception() is None:
                pool_future.result().terminate()
    finally:
        writer.close()


def _pool_context() -> multiprocessing.context.BaseContext:
    # fork where it is safe: this is the only Python thread and torch (whose thread pools fork
    # copies in whatever state they are) is not loaded, as in the build_cache stage. Workers then
    # start in milliseconds with nothing to import; the forkserver costs ~0.4 s of a core first.
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1 and "torch" not in sys.modules:
        return multiprocessing.get_context("fork")
    # Otherwise forkserver: it imports the caller's main module and this one once, in a fresh
    # single-threaded server, then forks every worker from it: one interpreter start-up
    # instead of one per worker (spawn), which on 32 cores is 32 imports of pandas et al.
    if "forkserver" not in methods:
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["__main__", __name__])  # takes effect if the server is not yet running
    return context


class _ChunkWriter:
    """Decodes chunks of rows into one reused buffer and writes each with one pwrite."""

    def __init__(self, job: _Job):
        self.job = job
        self.fd = os.open(job.images_path, os.O_WRONLY)
        self.direct_fd = _open_direct(job)
        self.buffer = _page_aligned_rows(0, job.size)

    def decode(self, task: tuple[int, list[str]]) -> list[_Result]:
        start, names = task
        job = self.job
        if len(self.buffer) < len(names):
            self.buffer = _page_aligned_rows(len(names), job.size)
        rows = self.buffer[: len(names)]
        results: list[_Result] = []
        for j, name in enumerate(names):
            try:
                rows[j], (width, height) = load_rgb_and_size(
                    Path(job.image_dir) / name, job.size, job.resize, max_pixels=job.max_pixels
                )
                results.append((width, height, None))
            except ImageReadError as exc:
                rows[j] = 0  # bad images leave zero rows (the buffer is reused)
                results.append((0, 0, exc.reason))
        self._write(memoryview(rows).cast("B"), job.offset + start * job.row_bytes)
        return results

    def _write(self, data: memoryview, position: int) -> None:
        if self.direct_fd is not None:
            try:
                _pwrite_all(self.direct_fd, data, position)
                return
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                os.close(self.direct_fd)  # this file system takes no direct writes: buffered from now on
                self.direct_fd = None
        _pwrite_all(self.fd, data, position)

    def close(self) -> None:
        os.close(self.fd)
        if self.direct_fd is not None:
            os.close(self.direct_fd)


def _open_direct(job: _Job) -> int | None:
    """A second descriptor on images.npy that writes around the page cache (O_DIRECT), where
    every chunk starts and ends on a page: rows go from the buffer to the disk, with no page
    cache to fill (here writing 590 MB through it cost 0.25-1.9 s of system CPU, direct
    0.01 s) and no writeback left for the final fsync. None where not possible."""
    if not hasattr(os, "O_DIRECT") or job.row_bytes % _PAGE or job.offset % _PAGE:
        return None
    try:
        return os.open(job.images_path, os.O_WRONLY | os.O_DIRECT)
    except OSError as exc:
        if exc.errno == errno.EINVAL:  # e.g. tmpfs before Linux 6.6
            return None
        raise


def _page_aligned_rows(n_rows: int, size: int) -> np.ndarray:
    """An uninitialised (n_rows, size, size, 3) uint8 buffer starting on a page (direct I/O
    needs aligned memory); anonymous mmap memory always does."""
    nbytes = n_rows * size * size * 3
    memory = mmap.mmap(-1, max(nbytes, 1))
    return np.frombuffer(memory, np.uint8, count=nbytes).reshape(n_rows, size, size, 3)


_worker: dict = {}


def _worker_init(job: _Job) -> None:
    _worker["writer"] = _ChunkWriter(job)  # its file is closed when the process exits


def _worker_chunk(task: tuple[int, list[str]]) -> tuple[int, list[_Result]]:
    return task[0], _worker["writer"].decode(task)


def _pwrite_all(fd: int, data: memoryview, position: int) -> None:
    while len(data):
        written = os.pwrite(fd, data, position)
        data, position = data[written:], position + written


def _compact_rows(images_path: Path, offset: int, good: np.ndarray, size: int) -> None:
    """Rewrite images_path keeping only rows where `good`, a bounded chunk at a time."""
    row_bytes = size * size * 3
    compact_path = images_path.with_name("images.compact.npy")
    new_offset = _create_npy(compact_path, int(good.sum()), size)
    rows_per_chunk = max(1, _CHUNK_BYTES // row_bytes)
    src = os.open(images_path, os.O_RDONLY)
    dst = os.open(compact_path, os.O_WRONLY)
    try:
        written_rows = 0
        for start in range(0, len(good), rows_per_chunk):
            keep = good[start : start + rows_per_chunk]
            raw = os.pread(src, len(keep) * row_bytes, offset + start * row_bytes)
            rows = np.frombuffer(raw, np.uint8).reshape(len(keep), row_bytes)[keep]
            _pwrite_all(dst, memoryview(rows).cast("B"), new_offset + written_rows * row_bytes)
            written_rows += len(rows)
            del raw, rows  # free before the next pread allocates: peak stays one chunk
    finally:
        os.close(src)
        os.close(dst)
    os.replace(compact_path, images_path)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_cache_info(cache_dir: Path) -> dict:
    """The cache_info.json of a finished cache."""
    path = Path(cache_dir) / INFO_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DataError(f"{path} is missing: is {cache_dir} a finished cache?") from exc
