"""Free-disk checks before the big writes (the image cache, archive extraction).

A full disk half-way through a 232 GB cache build or a 100 GB extraction wastes hours and
ends in an OSError deep inside a worker; checked first, it is one line naming the folder, the
space needed and the space free, before anything is written.

`DEEPFAKE_WORKFLOW_MIN_FREE_GB` (decimal GB, default 0) is space to leave free on top: a
build or extraction that would leave less stops the same way (e.g. to keep room for the
checkpoints and predictions that follow, or for other users of a shared disk).
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from .errors import ConfigError, DataError

MIN_FREE_ENV = "DEEPFAKE_WORKFLOW_MIN_FREE_GB"


def min_free_bytes() -> int:
    """The space to leave free, from $DEEPFAKE_WORKFLOW_MIN_FREE_GB (0 when unset)."""
    raw = os.environ.get(MIN_FREE_ENV, "").strip()
    if not raw:
        return 0
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):  # also refuses nan
        raise ConfigError(f"environment variable {MIN_FREE_ENV}={raw!r}: expected a number of GB >= 0")
    return int(value * 1e9)


def _existing(folder: str | os.PathLike) -> Path:
    """`folder`, or its nearest existing parent for a folder not yet made."""
    path = Path(folder).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_bytes(folder: str | os.PathLike) -> int:
    """Bytes an ordinary user may still write on the filesystem of `folder`."""
    return shutil.disk_usage(_existing(folder)).free


def on_disk(sizes: Iterable[int], folder: str | os.PathLike) -> int:
    """What files of these sizes take on the filesystem of `folder`: each rounded up to whole blocks."""
    block = os.statvfs(_existing(folder)).f_frsize or 4096
    return sum(-(-n // block) * block for n in sizes)


def require_free_space(folder: str | os.PathLike, needed: int, what: str) -> None:
    """Raise DataError unless `needed` bytes (plus the MIN_FREE_ENV reserve) fit in `folder`."""
    reserve = min_free_bytes()
    free = free_bytes(folder)
    if needed + reserve > free:
        kept = f" and {MIN_FREE_ENV} keeps {format_bytes(reserve)} free" if reserve else ""
        raise DataError(f"not enough free disk space in {Path(folder).absolute()}: {what} needs "
                        f"{format_bytes(needed)}{kept}, but only {format_bytes(free)} are free")


class SpaceBudget:
    """For writes whose total is only known as they come (a tar read as a stream): `take`
    each item's size before writing it; the free space is asked again only when the budget
    left runs short (another process may have freed some), so a million small files cost no
    million statvfs calls."""

    def __init__(self, folder: str | os.PathLike, what: str):
        self.folder = Path(folder)
        self.what = what
        self.reserve = min_free_bytes()
        self.left = free_bytes(self.folder) - self.reserve
        self.block = os.statvfs(_existing(folder)).f_frsize or 4096
        self.taken = 0

    def take(self, nbytes: int, item: str) -> None:
        nbytes = -(-nbytes // self.block) * self.block
        if nbytes > self.left:
            free = free_bytes(self.folder)
            self.left = free - self.reserve
            if nbytes > self.left:
                kept = f" and {MIN_FREE_ENV} keeps {format_bytes(self.reserve)} free" if self.reserve else ""
                raise DataError(
                    f"not enough free disk space in {self.folder.absolute()}: {self.what}, {item} needs "
                    f"{format_bytes(nbytes)} after {format_bytes(self.taken)} written{kept}, "
                    f"but only {format_bytes(free)} are free")
        self.left -= nbytes
        self.taken += nbytes


def format_bytes(n: int) -> str:
    """1234567 -> '1.2 MB' (decimal units, as df -H and disk makers count)."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"
