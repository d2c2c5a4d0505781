"""safe_extract(): real tar and zip files, normal and crafted to escape the destination."""
from __future__ import annotations

import io
import os
import stat
import tarfile
import uuid
import zipfile
from pathlib import Path

import pytest

from deepfake_workflow.archives import safe_extract
from deepfake_workflow.errors import DataError

GOOD = {"phase1/trainset/a.jpg": b"jpeg a", "phase1/trainset/b.jpg": b"jpeg b", "phase1/trainset_label.txt": b"x\n"}


def _tar_info(name: str, *, data: bytes = b"", type=tarfile.REGTYPE, linkname: str = "") -> tuple:
    info = tarfile.TarInfo(name)
    info.type = type
    info.linkname = linkname
    info.size = len(data) if type == tarfile.REGTYPE else 0
    return info, io.BytesIO(data) if type == tarfile.REGTYPE else None


def _write_tar(path: Path, members: list[tuple], mode: str = "w") -> Path:
    with tarfile.open(path, mode) as tar:
        for info, fileobj in members:
            tar.addfile(info, fileobj)
    return path


def _good_tar_members(prefix: str = "") -> list[tuple]:
    members = [_tar_info(prefix + "phase1", type=tarfile.DIRTYPE)]
    members += [_tar_info(prefix + name, data=data) for name, data in GOOD.items()]
    return members


def _write_zip(path: Path, entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for info, data in entries:
            zf.writestr(info, data)
    return path


def _zip_info(name: str, unix_mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # unix, so external_attr carries st_mode
    info.external_attr = unix_mode << 16
    return info


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _assert_extracted(dest: Path) -> None:
    for name, data in GOOD.items():
        assert (dest / name).read_bytes() == data
        assert stat.S_IMODE((dest / name).stat().st_mode) == 0o644


@pytest.mark.parametrize("mode", ["w", "w:gz", "w:bz2", "w:xz"])
def test_normal_tar_extracts(tmp_path, mode):
    # Named .bin on purpose: the format is detected from the content.
    archive = _write_tar(tmp_path / "data.bin", _good_tar_members(), mode)
    names = safe_extract(archive, tmp_path / "out")
    assert names == ["phase1", *GOOD]
    _assert_extracted(tmp_path / "out")
    assert _tree(tmp_path) == {"data.bin", "out", *(f"out/{p}" for p in _tree(tmp_path / "out"))}


def test_tar_with_dot_slash_prefix_extracts(tmp_path):
    # `tar -C dir -czf x.tgz .` writes './' and './phase1/...' names.
    members = [_tar_info(".", type=tarfile.DIRTYPE), *_good_tar_members("./")]
    archive = _write_tar(tmp_path / "x.tgz", members, "w:gz")
    assert safe_extract(archive, tmp_path / "out") == ["phase1", *GOOD]
    _assert_extracted(tmp_path / "out")


def test_normal_zip_extracts(tmp_path):
    archive = _write_zip(tmp_path / "data.zip", [("phase1/", b""), *GOOD.items()])
    assert safe_extract(archive, tmp_path / "out") == ["phase1", *GOOD]
    _assert_extracted(tmp_path / "out")


def test_reextract_replaces_top_level_entries_and_keeps_others(tmp_path):
    dest = tmp_path / "out"
    (dest / "phase1").mkdir(parents=True)
    (dest / "phase1" / "stale.jpg").write_bytes(b"old")
    (dest / "unrelated.txt").write_text("keep me")
    safe_extract(_write_tar(tmp_path / "x.tar", _good_tar_members()), dest)
    _assert_extracted(dest)
    assert not (dest / "phase1" / "stale.jpg").exists()
    assert (dest / "unrelated.txt").read_text() == "keep me"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-extract")]


OUTSIDE = f"/tmp/evil-{uuid.uuid4().hex}"

BAD_TAR_MEMBERS = {
    "dotdot": (_tar_info("../evil", data=b"x"), "'..'"),
    "nested-dotdot": (_tar_info("phase1/../../evil", data=b"x"), "'..'"),
    "absolute": (_tar_info(OUTSIDE, data=b"x"), "absolute"),
    "symlink-out": (_tar_info("phase1/link", type=tarfile.SYMTYPE, linkname="../../outside"), "symlink"),
    "symlink-abs": (_tar_info("phase1/link", type=tarfile.SYMTYPE, linkname="/etc/passwd"), "symlink"),
    "hardlink-out": (_tar_info("phase1/hard", type=tarfile.LNKTYPE, linkname="../outside"), "hard link"),
    "fifo": (_tar_info("phase1/pipe", type=tarfile.FIFOTYPE), "FIFO"),
    "chardev": (_tar_info("phase1/null", type=tarfile.CHRTYPE), "character device"),
    "blockdev": (_tar_info("phase1/sda", type=tarfile.BLKTYPE), "block device"),
    "duplicate": (_tar_info("phase1/trainset/a.jpg", data=b"other"), "more than once"),
    "under-a-file": (_tar_info("phase1/trainset/a.jpg/x", data=b"x"), "which is a file"),
    "file-and-dir": (_tar_info("phase1/trainset/a.jpg", type=tarfile.DIRTYPE), "both a file and a directory"),
}


@pytest.mark.parametrize("case", sorted(BAD_TAR_MEMBERS))
def test_crafted_tar_is_refused_before_writing(tmp_path, case):
    bad, reason = BAD_TAR_MEMBERS[case]
    # Good members first: a refusal must come before any of them is written.
    archive = _write_tar(tmp_path / "bad.tar.gz", [*_good_tar_members(), bad], "w:gz")
    dest = tmp_path / "work" / "out"
    (tmp_path / "work").mkdir()
    with pytest.raises(DataError, match=reason) as err:
        safe_extract(archive, dest)
    assert str(archive) in str(err.value) and bad[0].name in str(err.value)
    assert _tree(tmp_path) == {"bad.tar.gz", "work"}
    assert not Path(OUTSIDE).exists()


BAD_ZIP_ENTRIES = {
    "dotdot": ("../evil", "'..'"),
    "backslash-dotdot": ("phase1\\..\\..\\evil", "'..'"),
    "absolute": (OUTSIDE, "absolute"),
    "drive": ("C:/evil", "absolute"),
    "symlink": (_zip_info("phase1/link", stat.S_IFLNK | 0o777), "symlink"),
    "fifo": (_zip_info("phase1/pipe", stat.S_IFIFO | 0o644), "special file mode"),
}


@pytest.mark.parametrize("case", sorted(BAD_ZIP_ENTRIES))
def test_crafted_zip_is_refused_before_writing(tmp_path, case):
    bad, reason = BAD_ZIP_ENTRIES[case]
    archive = _write_zip(tmp_path / "bad.zip", [*GOOD.items(), (bad, b"../../outside")])
    dest = tmp_path / "work" / "out"
    (tmp_path / "work").mkdir()
    with pytest.raises(DataError, match=reason) as err:
        safe_extract(archive, dest)
    bad_name = bad if isinstance(bad, str) else bad.filename
    assert str(archive) in str(err.value) and repr(bad_name) in str(err.value)
    assert _tree(tmp_path) == {"bad.zip", "work"}
    assert not Path(OUTSIDE).exists()


def test_not_an_archive_is_a_data_error(tmp_path):
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(os.urandom(2048))
    with pytest.raises(DataError, match="neither a tar nor a zip"):
        safe_extract(junk, tmp_path / "out")
    with pytest.raises(DataError, match="does not exist"):
        safe_extract(tmp_path / "missing.zip", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_truncated_archive_leaves_nothing_under_final_names(tmp_path):
    members = [_tar_info(f"phase1/f{i}.bin", data=os.urandom(20_000)) for i in range(5)]
    full = _write_tar(tmp_path / "full.tar.gz", members, "w:gz").read_bytes()
    truncated = tmp_path / "cut.tar.gz"
    truncated.write_bytes(full[: len(full) * 2 // 3])
    with pytest.raises(DataError, match="corrupt"):
        safe_extract(truncated, tmp_path / "out")
    assert not (tmp_path / "out" / "phase1").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-extract")]
