"""Free-disk checks before the cache build and archive extraction, archives read once, the
extraction progress bar. On a real 1 MB tmpfs where the test may mount one (root with
CAP_SYS_ADMIN), else through the documented reserve DEEPFAKE_WORKFLOW_MIN_FREE_GB."""
from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from deepfake_workflow.archives import safe_extract
from deepfake_workflow.cache import build_cache
from deepfake_workflow.diskspace import MIN_FREE_ENV, free_bytes
from deepfake_workflow.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]
HUGE_RESERVE_GB = "1000000"  # 1 PB: more than any disk has free


def _images(folder: Path, n: int) -> pd.DataFrame:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / f"{i:03d}.jpg")
    return pd.DataFrame({"img_name": [f"{i:03d}.jpg" for i in range(n)], "target": 0})


def _tar_gz(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@contextlib.contextmanager
def _tmpfs(path: Path, size: str):
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); the reserve tests cover the checks")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def test_cache_build_stops_before_writing_when_the_reserve_does_not_fit(tmp_path, monkeypatch):
    items = _images(tmp_path / "imgs", 5)
    monkeypatch.setenv(MIN_FREE_ENV, HUGE_RESERVE_GB)
    with pytest.raises(DataError) as err:
        build_cache(items, tmp_path / "imgs", tmp_path / "cache" / "train", size=64, resize="squash", progress=False)
    message = str(err.value)
    assert message.startswith(f"not enough free disk space in {tmp_path / 'cache'}: the cache of 5 images at 64x64")
    assert "61.8 kB" in message  # 5 * 64 * 64 * 3 = 61,440 bytes + about 64 bytes per index row
    assert f"{MIN_FREE_ENV} keeps 1000.0 TB free" in message and "are free" in message
    assert _leftovers(tmp_path / "cache") == []  # not even a temporary folder

    monkeypatch.setenv(MIN_FREE_ENV, "0.001")  # 1 MB: fits
    build_cache(items, tmp_path / "imgs", tmp_path / "cache" / "train", size=64, resize="squash", progress=False)
    assert _leftovers(tmp_path / "cache") == ["train"]


def test_bad_reserve_value_names_the_variable(tmp_path, monkeypatch):
    items = _images(tmp_path / "imgs", 1)
    monkeypatch.setenv(MIN_FREE_ENV, "lots")
    with pytest.raises(ConfigError, match=f"{MIN_FREE_ENV}='lots': expected a number of GB >= 0"):
        build_cache(items, tmp_path / "imgs", tmp_path / "c", size=16, resize="squash", progress=False)


def test_build_cache_stage_exits_non_zero_with_one_line(tmp_path):
    _images(tmp_path / "imgs", 3).to_csv(tmp_path / "labels.csv", index=False)
    manifest = {"split": "train", "images": str(tmp_path / "imgs"), "labels": str(tmp_path / "labels.csv"),
                "n_images": 3, "n_fake": 0, "n_real": 3, "labels_sha256": "0" * 64}
    (tmp_path / "train.json").write_text(json.dumps(manifest))
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts/build_cache.py"), "--config-json", json.dumps({"cache": {"size": 16}}),
         "--split-manifest", str(tmp_path / "train.json"), "--out-dir", str(tmp_path / "out" / "train"),
         "--no-progress"],
        capture_output=True, text=True, timeout=120, env={**os.environ, MIN_FREE_ENV: HUGE_RESERVE_GB})
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: not enough free disk space in {tmp_path / 'out'}: the cache of 3 images")
    assert "Traceback" not in done.stderr and not (tmp_path / "out" / "train").exists()


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_extraction_stops_before_writing_when_the_reserve_does_not_fit(tmp_path, monkeypatch, kind):
    members = {"phase1/a.jpg": os.urandom(3000), "phase1/b.jpg": os.urandom(5000)}
    if kind == "zip":
        import zipfile

        archive = tmp_path / "data.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            for name, data in members.items():
                zf.writestr(name, data)
    else:
        archive = _tar_gz(tmp_path / "data.tar.gz", members)
    (tmp_path / "work").mkdir()
    monkeypatch.setenv(MIN_FREE_ENV, HUGE_RESERVE_GB)
    with pytest.raises(DataError, match=f"not enough free disk space in {tmp_path / 'work'}: extracting {archive}"):
        safe_extract(archive, tmp_path / "work" / "raw")
    assert _leftovers(tmp_path / "work") == []


def test_on_a_full_tmpfs_cache_and_extraction_stop_cleanly(tmp_path):
    """A real 1 MB filesystem: what fits is written, what does not stops before writing (the
    cache, an archive larger than the space) or as soon as the streamed total passes it
    (a .tar.gz whose 2 MB of content compresses to a few kB), leaving nothing behind."""
    items = _images(tmp_path / "imgs", 40)
    with _tmpfs(tmp_path / "small", "1m") as disk:
        free = free_bytes(disk)
        assert 900_000 < free <= 1_048_576
        build_cache(items.head(10), tmp_path / "imgs", disk / "fits", size=64, resize="squash", progress=False)
        assert len(np.load(disk / "fits" / "images.npy")) == 10  # 123 kB
        after_cache = free_bytes(disk)

        with pytest.raises(DataError, match=f"not enough free disk space in {disk}: the cache of 40 images at "
                                            "128x128 px needs 2.0 MB, but only"):
            build_cache(items, tmp_path / "imgs", disk / "big", size=128, resize="squash", progress=False)
        assert _leftovers(disk) == ["fits"]

        incompressible = _tar_gz(tmp_path / "big.tar.gz", {"phase1/x.bin": os.urandom(1_500_000)})
        with pytest.raises(DataError, match=rf"extracting {incompressible} \(about the archive's size\) needs 1\.5 MB"):
            safe_extract(incompressible, disk / "raw")
        assert _leftovers(disk) == ["fits"]

        compressible = _tar_gz(tmp_path / "zeros.tar.gz", {f"phase1/{i}.bin": bytes(400_000) for i in range(5)})
        assert compressible.stat().st_size < 100_000
        # 400,000 bytes take 401.4 kB in 4 kB blocks; two fit in what the cache left
        with pytest.raises(DataError, match=r"extracting .*zeros\.tar\.gz, member 'phase1/2\.bin' needs "
                                            r"401\.4 kB after 802\.8 kB written, but only"):
            safe_extract(compressible, disk / "raw")
        assert _leftovers(disk) == ["fits"]  # the partly extracted staging folder is gone
        assert free_bytes(disk) == after_cache


def test_tar_gz_is_decompressed_once(tmp_path):
    # 4 MB that gzip cannot shrink: reading the archive twice (list, then extract) would read ~8 MB.
    members = {f"phase1/{i}.bin": os.urandom(1_000_000) for i in range(4)}
    archive = _tar_gz(tmp_path / "data.tar.gz", members)
    io_file = Path("/proc/self/io")
    if not io_file.exists():
        pytest.skip("needs Linux /proc/self/io")

    def bytes_read() -> int:
        return int(dict(line.split(": ") for line in io_file.read_text().splitlines())["rchar"])

    before = bytes_read()
    safe_extract(archive, tmp_path / "out")
    read = bytes_read() - before
    size = archive.stat().st_size
    assert read < 1.3 * size, f"read {read:,} bytes for a {size:,}-byte archive"
    assert {p.name for p in (tmp_path / "out" / "phase1").iterdir()} == {f"{i}.bin" for i in range(4)}


def test_extraction_shows_a_progress_bar_on_stderr(tmp_path, capfd):
    archive = _tar_gz(tmp_path / f"{uuid.uuid4().hex[:8]}.tar.gz", {"phase1/a.bin": os.urandom(50_000)})
    safe_extract(archive, tmp_path / "out", progress=True)
    captured = capfd.readouterr()
    assert f"extract {archive.name}: 100%" in captured.err and captured.out == ""
    safe_extract(archive, tmp_path / "out2")  # off by default (library calls, tests)
    assert capfd.readouterr().err == ""
