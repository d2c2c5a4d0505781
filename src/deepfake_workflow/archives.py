"""Extract tar and zip archives without letting a member escape the destination.

Every member is checked as it comes, before it is written. Only regular files and
directories are extracted: symlinks, hard links, devices and FIFOs are refused outright (a
dataset archive has no need for them, and refusing them is simpler and safer than judging
where each link points). Extraction goes to a temporary sibling of `dest`; the finished
top-level entries are then renamed into `dest`, so a refused member, a corrupt archive, a
full disk or a kill leaves nothing under the final names. Files are written by this module
(mode 0644, directories 0755), not by tarfile/zipfile's own extract methods.

A tar archive (compressed or not) is read once, as a stream: members are checked and
written as they are decompressed (a 100 GB .tar.gz is not decompressed a second time only
to list it). Free disk space is checked before extraction (a zip's members' total from its
central directory; for a tar, the archive's own size, which image data hardly compresses
below) and again before each member, against its size.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from tqdm import tqdm

from .diskspace import SpaceBudget, on_disk, require_free_space
from .errors import DataError

# Errors a corrupt or truncated archive raises while being read.
_CORRUPT = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError, ValueError)


@dataclass(frozen=True)
class _Member:
    name: str  # normalized, relative, '/'-separated
    is_dir: bool
    size: int  # bytes of a file's content; 0 for directories
    opener: Callable[[], IO[bytes]] | None  # None for directories


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike, *, progress: bool = False) -> list[str]:
    """Extract a .tar/.tar.gz/.tgz/.tar.bz2/.tar.xz or .zip archive into `dest`.

    The format is detected from the content, not the file name. Returns the normalized
    names of the extracted members (files and directories, in archive order). `progress`
    shows a progress bar (bytes of the archive read) on stderr.

    Raises DataError, naming the archive and the member, before writing anything under
    `dest` if a member has an absolute path, a `..` component, a name that would resolve
    outside `dest`, is a symlink or hard link (all links are refused), a device or FIFO, or
    is an encrypted zip entry; also if two members clash (same file twice, or one path used
    both as file and directory), the archive is not a readable tar or zip, or the disk
    has not enough free space (diskspace.MIN_FREE_ENV keeps a reserve on top).
    Top-level entries already in `dest` with the same names are replaced.
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise DataError(f"archive {archive} does not exist or is not a file")
    if dest.exists() and not dest.is_dir():
        raise DataError(f"cannot extract {archive}: destination {dest} exists and is not a directory")
    try:
        if tarfile.is_tarfile(archive):
            size = archive.stat().st_size
            require_free_space(dest.parent, size, f"extracting {archive} (about the archive's size)")
            with open(archive, "rb") as raw, tarfile.open(fileobj=raw, mode="r|*") as tar, \
                    _bar(archive, size, progress) as bar:
                return _extract(archive, dest, _tar_members(archive, tar), bar, lambda _: raw.tell())
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                sizes = [info.file_size for info in zf.infolist() if not info.is_dir()]
                need = on_disk(sizes, dest.parent)
                require_free_space(dest.parent, need, f"extracting {archive} (its members' total size)")
                with _bar(archive, sum(sizes), progress) as bar:
                    return _extract(archive, dest, _zip_members(archive, zf), bar, lambda extracted: extracted)
    except DataError:
        raise
    except _CORRUPT as exc:
        raise DataError(f"archive {archive} is corrupt or unreadable: {type(exc).__name__}: {exc}") from exc
    raise DataError(f"{archive} is neither a tar nor a zip archive")


def _bar(archive: Path, total: int, progress: bool) -> tqdm:
    return tqdm(total=total, unit="B", unit_scale=True, desc=f"extract {archive.name}", disable=not progress)


def _safe_name(archive: Path, raw: str) -> str:
    """Return `raw` as a clean relative path, or raise DataError if it could escape."""
    if "\x00" in raw:
        raise DataError(f"archive {archive}: member {raw!r} has a NUL byte in its name")
    # Treat backslashes as separators too: a zip made on Windows may use them, and a
    # name like '..\\evil' must not slip through as one harmless-looking component.
    unified = raw.replace("\\", "/")
    if unified.startswith("/") or (len(unified) >= 2 and unified[1] == ":"):
        raise DataError(f"archive {archive}: member {raw!r} has an absolute path")
    parts = [p for p in unified.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise DataError(f"archive {archive}: member {raw!r} contains a '..' component")
    return "/".join(parts)


def _tar_members(archive: Path, tar: tarfile.TarFile) -> Iterator[_Member]:
    """The members of a tar opened as a stream: each must be read before the next is asked for."""
    for info in tar:
        name = _safe_name(archive, info.name)
        if info.issym() or info.islnk():
            kind = "symlink" if info.issym() else "hard link"
            raise DataError(
                f"archive {archive}: member {info.name!r} is a {kind} (to {info.linkname!r}); links are not allowed"
            )
        if info.isdir():
            yield _Member(name, True, 0, None)
        elif info.isreg():
            yield _Member(name, False, info.size, lambda info=info: tar.extractfile(info))
        else:
            kind = {tarfile.CHRTYPE: "character device", tarfile.BLKTYPE: "block device",
                    tarfile.FIFOTYPE: "FIFO"}.get(info.type, f"type {info.type!r}")
            raise DataError(f"archive {archive}: member {info.name!r} is a {kind}; "
                            "only files and directories are allowed")


def _zip_members(archive: Path, zf: zipfile.ZipFile) -> Iterator[_Member]:
    for info in zf.infolist():
        name = _safe_name(archive, info.filename)
        unix_mode = info.external_attr >> 16
        file_type = stat.S_IFMT(unix_mode)
        if stat.S_ISLNK(unix_mode):
            raise DataError(f"archive {archive}: member {info.filename!r} is a symlink; links are not allowed")
        if file_type and file_type not in (stat.S_IFREG, stat.S_IFDIR):
            raise DataError(
                f"archive {archive}: member {info.filename!r} has special file mode {oct(unix_mode)}; "
                f"only files and directories are allowed"
            )
        if info.flag_bits & 0x1:
            raise DataError(f"archive {archive}: member {info.filename!r} is encrypted")
        if info.is_dir():
            yield _Member(name, True, 0, None)
        else:
            yield _Member(name, False, info.file_size, lambda info=info: zf.open(info))


class _LayoutCheck:
    """Refuses duplicate files and paths used both as a file and as a directory, member by member."""

    def __init__(self, archive: Path):
        self.archive = archive
        self.files: set[str] = set()
        self.dirs: set[str] = set()

    def add(self, m: _Member) -> None:
        archive = self.archive
        if not m.name:
            if m.is_dir:  # the archive root itself ('./'): nothing to create
                return
            raise DataError(f"archive {archive}: a file member has an empty name")
        parents = [str(p) for p in PurePosixPath(m.name).parents if str(p) != "."]
        for parent in parents:
            if parent in self.files:
                raise DataError(f"archive {archive}: member {m.name!r} lies under {parent!r}, which is a file")
        self.dirs.update(parents)
        if m.is_dir:
            if m.name in self.files:
                raise DataError(f"archive {archive}: member {m.name!r} is both a file and a directory")
            self.dirs.add(m.name)
        elif m.name in self.files:
            raise DataError(f"archive {archive}: member {m.name!r} appears more than once")
        elif m.name in self.dirs:
            raise DataError(f"archive {archive}: member {m.name!r} is both a file and a directory")
        else:
            self.files.add(m.name)


def _extract(archive: Path, dest: Path, members: Iterator[_Member], bar: tqdm,
             position: Callable[[int], int]) -> list[str]:
    """`position(bytes extracted so far)` is where the progress bar stands."""
    layout = _LayoutCheck(archive)
    dest = dest.absolute()
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Same filesystem as dest, so the final moves are renames, not copies.
    staging = Path(tempfile.mkdtemp(prefix=f".tmp-extract-{dest.name}-", dir=dest.parent))
    tree, replaced = staging / "tree", staging / "replaced"
    tree.mkdir()
    replaced.mkdir()
    space = SpaceBudget(dest.parent, f"extracting {archive}")
    names = []
    extracted = 0
    try:
        root = tree.resolve()
        for m in members:
            layout.add(m)
            if not m.name:
                continue
            names.append(m.name)
            target = tree / m.name
            # Belt and braces: names are already clean and the tree holds no links.
            if not target.resolve().is_relative_to(root):
                raise DataError(f"archive {archive}: member {m.name!r} would be written outside {dest}")
            if m.is_dir:
                target.mkdir(mode=0o755, parents=True, exist_ok=True)
            else:
                space.take(m.size, f"member {m.name!r}")
                target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
                with m.opener() as src, _disk_full_is_data_error(archive, dest), open(target, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
                os.chmod(target, 0o644)
                extracted += m.size
            bar.update(position(extracted) - bar.n)
        dest.mkdir(exist_ok=True)
        for entry in sorted(tree.iterdir()):
            final = dest / entry.name
            if final.exists() or final.is_symlink():
                os.replace(final, replaced / entry.name)  # deleted with staging below
            os.replace(entry, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return names


@contextlib.contextmanager
def _disk_full_is_data_error(archive: Path, dest: Path) -> Iterator[None]:
    """A disk that fills while writing (another writer took the space) is the user's to fix,
    like too little space found beforehand, not a corrupt archive."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DataError(f"disk full while extracting {archive} into {dest}: {exc}") from exc
        raise
