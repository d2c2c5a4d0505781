"""Atomic outputs: write to a temporary sibling, then rename into place.

A job killed half-way leaves only a `.tmp-*` sibling behind, never a file or folder
under the final name that looks finished.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _tmp_sibling(path: Path, is_dir: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".tmp-{path.name}-"
    # Leftovers of a killed earlier attempt at this same output: one job owns an output at a time.
    for stale in path.parent.glob(prefix + "*"):
        _remove(stale)
    if is_dir:
        return Path(tempfile.mkdtemp(prefix=prefix, dir=path.parent))
    fd, name = tempfile.mkstemp(prefix=prefix, dir=path.parent)
    os.close(fd)
    return Path(name)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path; on success move it to `path`, on error delete it."""
    final = Path(path)
    tmp = _tmp_sibling(final, is_dir)
    try:
        yield tmp
        # mkstemp/mkdtemp create owner-only entries; outputs are ordinary shared files.
        os.chmod(tmp, 0o755 if is_dir else 0o644)
        if final.exists() or final.is_symlink():
            _remove(final)
        os.replace(tmp, final)
    except BaseException:
        _remove(tmp)
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator:
    """Open a temporary file for writing; it replaces `path` only when closed cleanly."""
    with atomic_path(path) as tmp:
        with open(tmp, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def write_csv(df, path: str | os.PathLike, **kwargs) -> None:
    """Write a pandas DataFrame atomically (no index unless asked)."""
    kwargs.setdefault("index", False)
    with atomic_open(path, "w", encoding="utf-8", newline="") as fh:
        df.to_csv(fh, **kwargs)


def write_json(path: str | os.PathLike, obj, **kwargs) -> None:
    import json

    kwargs.setdefault("indent", 2)
    kwargs.setdefault("sort_keys", True)
    write_text(path, json.dumps(obj, **kwargs) + "\n")
