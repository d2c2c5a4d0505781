"""Extract tar and zip archives without letting a member escape the destination.

Every member is checked before anything is written. Only regular files and directories
are extracted: symlinks, hard links, devices and FIFOs are refused outright (a dataset
archive has no need for them, and refusing them is simpler and safer than judging where
each link points). Extraction goes to a temporary sibling of `dest`; the finished
top-level entries are then renamed into `dest`, so a killed extraction leaves no
half-extracted tree under the final names. Files are written by this module (mode 0644,
directories 0755), not by tarfile/zipfile's own extract methods.
"""
from __future__ import annotations

import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from .errors import DataError

# Errors a corrupt or truncated archive raises while being read.
_CORRUPT = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError, ValueError)


@dataclass(frozen=True)
class _Member:
    name: str  # normalized, relative, '/'-separated
    is_dir: bool
    opener: Callable[[], IO[bytes]] | None  # None for directories


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike) -> list[str]:
    """Extract a .tar/.tar.gz/.tgz/.tar.bz2/.tar.xz or .zip archive into `dest`.

    The format is detected from the content, not the file name. Returns the normalized
    names of the extracted members (files and directories, in archive order).

    Raises DataError, naming the archive and the member, before writing anything if a
    member has an absolute path, a `..` component, a name that would resolve outside
    `dest`, is a symlink or hard link (all links are refused), a device or FIFO, or is
    an encrypted zip entry; also if two members clash (same file twice, or one path
    used both as file and directory), or the archive is not a readable tar or zip.
    Top-level entries already in `dest` with the same names are replaced.
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise DataError(f"archive {archive} does not exist or is not a file")
    if dest.exists() and not dest.is_dir():
        raise DataError(f"cannot extract {archive}: destination {dest} exists and is not a directory")
    try:
        if tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tar:
                return _extract(archive, dest, _tar_members(archive, tar))
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                return _extract(archive, dest, _zip_members(archive, zf))
    except DataError:
        raise
    except _CORRUPT as exc:
        raise DataError(f"archive {archive} is corrupt or unreadable: {type(exc).__name__}: {exc}") from exc
    raise DataError(f"{archive} is neither a tar nor a zip archive")


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


def _tar_members(archive: Path, tar: tarfile.TarFile) -> list[_Member]:
    members = []
    for info in tar.getmembers():
        name = _safe_name(archive, info.name)
        if info.issym() or info.islnk():
            kind = "symlink" if info.issym() else "hard link"
            raise DataError(
                f"archive {archive}: member {info.name!r} is a {kind} (to {info.linkname!r}); links are not allowed"
            )
        if info.isdir():
            members.append(_Member(name, True, None))
        elif info.isreg():
            members.append(_Member(name, False, lambda info=info: tar.extractfile(info)))
        else:
            kind = {tarfile.CHRTYPE: "character device", tarfile.BLKTYPE: "block device",
                    tarfile.FIFOTYPE: "FIFO"}.get(info.type, f"type {info.type!r}")
            raise DataError(f"archive {archive}: member {info.name!r} is a {kind}; "
                            "only files and directories are allowed")
    return members


def _zip_members(archive: Path, zf: zipfile.ZipFile) -> list[_Member]:
    members = []
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
            members.append(_Member(name, True, None))
        else:
            members.append(_Member(name, False, lambda info=info: zf.open(info)))
    return members


def _check_layout(archive: Path, members: list[_Member]) -> None:
    """Refuse duplicate files and paths used both as a file and as a directory."""
    files: set[str] = set()
    dirs: set[str] = set()
    for m in members:
        if not m.name:
            if m.is_dir:  # the archive root itself ('./'): nothing to create
                continue
            raise DataError(f"archive {archive}: a file member has an empty name")
        parents = [str(p) for p in PurePosixPath(m.name).parents if str(p) != "."]
        for parent in parents:
            if parent in files:
                raise DataError(f"archive {archive}: member {m.name!r} lies under {parent!r}, which is a file")
        dirs.update(parents)
        if m.is_dir:
            if m.name in files:
                raise DataError(f"archive {archive}: member {m.name!r} is both a file and a directory")
            dirs.add(m.name)
        elif m.name in files:
            raise DataError(f"archive {archive}: member {m.name!r} appears more than once")
        elif m.name in dirs:
            raise DataError(f"archive {archive}: member {m.name!r} is both a file and a directory")
        else:
            files.add(m.name)


def _extract(archive: Path, dest: Path, members: list[_Member]) -> list[str]:
    _check_layout(archive, members)
    members = [m for m in members if m.name]
    dest = dest.absolute()
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Same filesystem as dest, so the final moves are renames, not copies.
    staging = Path(tempfile.mkdtemp(prefix=f".tmp-extract-{dest.name}-", dir=dest.parent))
    tree, replaced = staging / "tree", staging / "replaced"
    tree.mkdir()
    replaced.mkdir()
    try:
        root = tree.resolve()
        for m in members:
            target = tree / m.name
            # Belt and braces: names are already clean and the tree holds no links.
            if not target.resolve().is_relative_to(root):
                raise DataError(f"archive {archive}: member {m.name!r} would be written outside {dest}")
            if m.is_dir:
                target.mkdir(mode=0o755, parents=True, exist_ok=True)
                continue
            target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            with m.opener() as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
            os.chmod(target, 0o644)
        dest.mkdir(exist_ok=True)
        for entry in sorted(tree.iterdir()):
            final = dest / entry.name
            if final.exists() or final.is_symlink():
                os.replace(final, replaced / entry.name)  # deleted with staging below
            os.replace(entry, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [m.name for m in members]
