"""Image cache: layout, order, bad images, atomic replacement, flat memory."""
from __future__ import annotations

import json
import multiprocessing
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from deepfake_workflow import cache as cache_module
from deepfake_workflow.cache import CacheSummary, build_cache, open_cache
from deepfake_workflow.config import validate_config
from deepfake_workflow.errors import ConfigError, DataError
from deepfake_workflow.imageio import load_rgb

SIZE = 16


def _make_images(folder: Path, n: int, seed: int = 0) -> list[str]:
    """n small images of varied size, colour and format (every fifth a PNG named .jpg)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = []
    for i in range(n):
        width, height = int(rng.integers(20, 60)), int(rng.integers(20, 60))
        arr = rng.integers(30, 256, (height, width, 3), dtype=np.uint8)  # never all black
        name = f"{i:04d}{'abcdef'[i % 6]}.jpg"
        Image.fromarray(arr).save(folder / name, format="PNG" if i % 5 == 0 else "JPEG")
        names.append(name)
    return names


def _items(names: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "source": [f"s{i % 3}" for i in range(len(names))],  # extra column, placed first
            "img_name": names,
            "target": [(-1, 0, 1)[i % 3] for i in range(len(names))],
        }
    )


def _expected(folder: Path, names: list[str], resize: str = "squash") -> np.ndarray:
    return np.stack([load_rgb(folder / n, SIZE, resize) for n in names])


def _leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith(".tmp-")]


def test_build_with_two_workers_and_open(tmp_path):
    img_dir = tmp_path / "imgs"
    names = _make_images(img_dir, 30)
    out = tmp_path / "cache" / "train"
    summary = build_cache(
        _items(names), img_dir, out, size=SIZE, resize="squash", workers=2, progress=False
    )
    assert isinstance(summary, CacheSummary)
    assert (summary.n_images, summary.n_bad, summary.size, summary.resize) == (30, 0, SIZE, "squash")
    assert summary.seconds > 0 and summary.images_per_s > 0

    images, index = open_cache(out)
    assert isinstance(images, np.memmap) and not images.flags.writeable
    assert images.shape == (30, SIZE, SIZE, 3) and images.dtype == np.uint8
    assert list(index.columns) == ["img_name", "target", "source", "orig_width", "orig_height"]
    assert index["img_name"].tolist() == names
    assert index["target"].tolist() == [(-1, 0, 1)[i % 3] for i in range(30)]
    np.testing.assert_array_equal(images, _expected(img_dir, names))  # row i = index row i
    for row in index.itertuples():
        assert Image.open(img_dir / row.img_name).size == (row.orig_width, row.orig_height)

    assert (out / "bad_images.csv").read_text() == "img_name,error\n"
    info = json.loads((out / "cache_info.json").read_text())
    assert info["n_images"] == 30 and info["n_bad"] == 0 and info["resize"] == "squash"
    assert info["size"] == SIZE and info["created_by"].startswith("deepfake_workflow ")
    assert sorted(os.listdir(out)) == ["bad_images.csv", "cache_info.json", "images.npy", "index.csv"]
    assert _leftovers(out.parent) == []


def test_one_worker_gives_the_same_cache(tmp_path):
    img_dir = tmp_path / "imgs"
    names = _make_images(img_dir, 12, seed=3)
    build_cache(_items(names), img_dir, tmp_path / "c", size=SIZE, resize="letterbox", progress=False)
    images, _ = open_cache(tmp_path / "c")
    np.testing.assert_array_equal(images, _expected(img_dir, names, "letterbox"))


@pytest.mark.parametrize("size", [16, 64])  # rows of 768 bytes go through the page cache, of 3 pages direct
@pytest.mark.parametrize("start_method", ["fork", "forkserver"])
@pytest.mark.parametrize("resize", ["squash", "center_crop", "letterbox", "native_crop"])
def test_cache_file_is_byte_for_byte_the_reference_decoding(tmp_path, monkeypatch, resize, start_method, size):
    # Photo-like JPEGs 1x-10x the cache side (JPEG draft decoding at DCT scale 2, 4, 8), many
    # chunks per process, a bad file among them: images.npy must hold exactly the reference
    # decoder's rows (imageio.load_rgb, one image at a time), whichever way the workers were
    # started (the pool is made differently for each) and the rows written.
    monkeypatch.setattr(cache_module, "_pool_context", lambda: multiprocessing.get_context(start_method))
    img_dir = tmp_path / "imgs"
    img_dir.mkdir()
    rng = np.random.default_rng(7)
    names = []
    for i in range(40):
        width, height = int(rng.integers(48, 160)), int(rng.integers(48, 160))
        coarse = Image.fromarray(rng.integers(0, 256, (height // 8 + 2, width // 8 + 2, 3), dtype=np.uint8))
        names.append(f"{i:03d}.jpg")
        coarse.resize((width, height), Image.Resampling.BICUBIC).save(img_dir / names[-1], quality=90)
    (img_dir / "bad.jpg").write_bytes(b"not a jpeg")
    listed = names[:17] + ["bad.jpg"] + names[17:]
    build_cache(pd.DataFrame({"img_name": listed, "target": 0}), img_dir, tmp_path / "c", size=size,
                resize=resize, on_bad_image="skip", workers=2, progress=False)
    reference = np.stack([load_rgb(img_dir / n, size, resize) for n in names])
    cached = np.load(tmp_path / "c" / "images.npy")
    assert cached.dtype == np.uint8 and cached.shape == reference.shape
    assert cached.tobytes() == reference.tobytes()
    # The header fills one page, nothing follows the last row.
    assert (tmp_path / "c" / "images.npy").stat().st_size == 4096 + reference.nbytes


def _add_bad_files(img_dir: Path, names: list[str]) -> dict[str, str]:
    """Insert bad files at the start, middle (two in a row) and end; return name -> reason."""
    (img_dir / "empty.jpg").write_bytes(b"")
    (img_dir / "garbage.jpg").write_bytes(b"not an image at all" * 10)
    noise = np.random.default_rng(9).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    Image.fromarray(noise).save(img_dir / "cut.jpg", quality=90)
    data = (img_dir / "cut.jpg").read_bytes()
    (img_dir / "cut.jpg").write_bytes(data[: len(data) // 2])
    (img_dir / "folder.jpg").mkdir()
    bad = {
        "empty.jpg": "empty file",
        "garbage.jpg": "not a recognised image",
        "cut.jpg": "truncated",
        "folder.jpg": "directory",
        "missing.jpg": "not found",
    }
    names.insert(0, "empty.jpg")
    names.insert(11, "garbage.jpg")
    names.insert(12, "folder.jpg")
    names.insert(20, "cut.jpg")
    names.append("missing.jpg")
    return bad


def test_skip_mode_lists_bad_files_and_leaves_no_holes(tmp_path):
    img_dir = tmp_path / "imgs"
    good_names = _make_images(img_dir, 26)
    names = list(good_names)
    bad = _add_bad_files(img_dir, names)
    out = tmp_path / "cache"
    summary = build_cache(
        _items(names), img_dir, out, size=SIZE, resize="center_crop",
        on_bad_image="skip", workers=2, progress=False,
    )
    assert (summary.n_images, summary.n_bad) == (26, 5)
    images, index = open_cache(out)
    assert images.shape == (26, SIZE, SIZE, 3)
    assert index["img_name"].tolist() == good_names
    np.testing.assert_array_equal(images, _expected(img_dir, good_names, "center_crop"))
    assert images.reshape(26, -1).max(axis=1).min() > 0  # no all-zero rows left behind
    # extra column still lines up with its image after compaction
    original = _items(names).set_index("img_name")
    assert index["source"].tolist() == original.loc[good_names, "source"].tolist()

    listed = pd.read_csv(out / "bad_images.csv")
    assert listed["img_name"].tolist() == [
        "empty.jpg", "garbage.jpg", "folder.jpg", "cut.jpg", "missing.jpg"
    ]
    for name, reason in zip(listed["img_name"], listed["error"], strict=True):
        assert bad[name] in reason
    assert json.loads((out / "cache_info.json").read_text())["n_bad"] == 5


def test_error_mode_names_every_bad_file_and_writes_nothing(tmp_path):
    img_dir = tmp_path / "imgs"
    names = _make_images(img_dir, 10)
    bad = _add_bad_files(img_dir, names)
    out = tmp_path / "cache"
    with pytest.raises(DataError) as info:
        build_cache(_items(names), img_dir, out, size=SIZE, resize="squash", workers=2, progress=False)
    message = str(info.value)
    assert "5 of 15 images" in message and "on_bad_image" in message
    for name, reason in bad.items():
        assert f"{name}: " in message and reason in message
    assert not out.exists()
    assert _leftovers(tmp_path) == []


def test_error_mode_keeps_an_existing_cache(tmp_path):
    img_dir = tmp_path / "imgs"
    names = _make_images(img_dir, 5)
    out = tmp_path / "cache"
    build_cache(_items(names), img_dir, out, size=SIZE, resize="squash", progress=False)
    before = (out / "images.npy").read_bytes()
    (img_dir / "empty.jpg").write_bytes(b"")
    with pytest.raises(DataError, match="empty.jpg"):
        build_cache(_items([*names, "empty.jpg"]), img_dir, out, size=SIZE, resize="squash", progress=False)
    assert (out / "images.npy").read_bytes() == before


def test_many_bad_files_message_is_truncated(tmp_path):
    img_dir = tmp_path / "imgs"
    names = _make_images(img_dir, 2) + [f"gone{i:03d}.jpg" for i in range(120)]
    with pytest.raises(DataError) as info:
        build_cache(_items(names), img_dir, tmp_path / "c", size=SIZE, resize="squash", progress=False)
    message = str(info.value)
    assert "120 of 122 images" in message
    assert "gone000.jpg" in message and "gone049.jpg" in message
    assert "gone050.jpg" not in message and "... and 70 more" in message


def test_skip_mode_with_every_image_bad_is_an_error(tmp_path):
    img_dir = tmp_path / "imgs"
    img_dir.mkdir()
    with pytest.raises(DataError, match="all 2 images"):
        build_cache(
            _items(["a.jpg", "b.jpg"]), img_dir, tmp_path / "c", size=SIZE, resize="squash",
            on_bad_image="skip", progress=False,
        )
    assert not (tmp_path / "c").exists()


def test_existing_cache_is_replaced_whole(tmp_path):
    img_dir = tmp_path / "imgs"
    names = _make_images(img_dir, 8)
    out = tmp_path / "cache"
    build_cache(_items(names), img_dir, out, size=SIZE, resize="squash", progress=False)
    (out / "stale.txt").write_text("from the old cache")
    build_cache(_items(names[:3]), img_dir, out, size=32, resize="native_crop", progress=False)
    images, index = open_cache(out)
    assert images.shape == (3, 32, 32, 3)
    assert index["img_name"].tolist() == names[:3]
    assert not (out / "stale.txt").exists()
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"resize": "stretch"}, "cache.resize"),
        ({"size": 8}, "cache.size"),
        ({"size": 32.0}, "cache.size"),
        ({"size": 2049}, "config key 'cache.size': got 2049, expected <= 2048"),  # the schema's maximum
        ({"on_bad_image": "ignore"}, "cache.on_bad_image"),
        ({"max_pixels": 0}, "config key 'cache.max_pixels': got 0, expected >= 1"),
        ({"workers": 0}, "argument 'workers': got 0, expected >= 1"),
    ],
)
def test_bad_settings_name_the_config_key(tmp_path, kwargs, key):
    settings = {"size": SIZE, "resize": "squash"} | kwargs
    with pytest.raises(ConfigError, match=re.escape(key)):
        build_cache(_items(["a.jpg"]), tmp_path, tmp_path / "c", progress=False, **settings)
    assert not (tmp_path / "c").exists()


def test_settings_are_checked_as_the_config_checks_them(tmp_path):
    # one source of rules: the same bad value gives the same line from a config and from a call
    with pytest.raises(ConfigError) as from_config:
        validate_config({"cache": {"size": 4096}})
    with pytest.raises(ConfigError) as from_call:
        build_cache(_items(["a.jpg"]), tmp_path, tmp_path / "c", size=4096, resize="squash", progress=False)
    assert str(from_call.value).splitlines()[1:] == str(from_config.value).splitlines()[1:]


@pytest.mark.parametrize(
    ("items", "fragment"),
    [
        (pd.DataFrame({"img_name": ["a.jpg"]}), "target"),
        (pd.DataFrame({"img_name": [], "target": []}), "empty"),
        (pd.DataFrame({"img_name": ["a.jpg", "a.jpg"], "target": [0, 1]}), "more than once"),
        (pd.DataFrame({"img_name": ["a.jpg"], "target": [2]}), "row 0"),
        (pd.DataFrame({"img_name": ["../a.jpg"], "target": [0]}), "plain file name"),
        (pd.DataFrame({"img_name": ["/etc/passwd"], "target": [0]}), "plain file name"),
    ],
)
def test_bad_item_lists_are_data_errors(tmp_path, items, fragment):
    with pytest.raises(DataError, match=fragment):
        build_cache(items, tmp_path, tmp_path / "c", size=SIZE, resize="squash", progress=False)


def test_missing_image_dir(tmp_path):
    with pytest.raises(DataError, match="nowhere"):
        build_cache(_items(["a.jpg"]), tmp_path / "nowhere", tmp_path / "c", size=SIZE,
                    resize="squash", progress=False)


def test_open_cache_refuses_unfinished_or_mismatched(tmp_path):
    with pytest.raises(DataError, match="images.npy"):
        open_cache(tmp_path)
    img_dir = tmp_path / "imgs"
    names = _make_images(img_dir, 3)
    build_cache(_items(names), img_dir, tmp_path / "c", size=SIZE, resize="squash", progress=False)
    pd.DataFrame({"img_name": names[:2], "target": [0, 1]}).to_csv(tmp_path / "c" / "index.csv", index=False)
    with pytest.raises(DataError, match="2 rows"):
        open_cache(tmp_path / "c")


_PEAK_RSS_CHILD = textwrap.dedent(
    """
    import resource, sys
    from multiprocessing import forkserver
    from pathlib import Path
    import pandas as pd
    from deepfake_workflow.cache import build_cache

    if __name__ == "__main__":
        img_dir, out, n, workers = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
        names = ["bad.jpg"] + [f"{i:05d}.jpg" for i in range(n)]  # one bad file: compaction runs too
        items = pd.DataFrame({"img_name": names, "target": 0})
        build_cache(items, img_dir, out, size=256, resize="squash", on_bad_image="skip",
                    workers=workers, progress=False)
        # The workers are children of the forkserver: stop it (and so reap them) to count them.
        forkserver._forkserver._stop()
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
              resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    """
)


@pytest.mark.parametrize("workers", [1, 2])
def test_peak_memory_does_not_grow_with_image_count(tmp_path, workers):
    # 1000 images of 256x256x3 = 197 MB: holding the 800 more than for 200 would add 157 MB,
    # and any process that held its share (the caller decodes too) well above the 20 MB allowed
    # (a chunk buffer is at most 8 MB).
    img_dir = tmp_path / "imgs"
    img_dir.mkdir()
    src = img_dir / "source.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(src)
    for i in range(1000):
        os.link(src, img_dir / f"{i:05d}.jpg")
    (img_dir / "bad.jpg").write_bytes(b"")
    script = tmp_path / "child.py"
    script.write_text(_PEAK_RSS_CHILD)

    def peak_mib(n: int) -> np.ndarray:
        """Peak RSS of the calling process and of the largest worker (0 without workers)."""
        done = subprocess.run(
            [sys.executable, str(script), str(img_dir), str(tmp_path / f"c{n}"), str(n), str(workers)],
            capture_output=True, text=True, check=True, timeout=300,
        )
        assert len(np.load(tmp_path / f"c{n}" / "images.npy", mmap_mode="r")) == n
        return np.array([int(v) for v in done.stdout.split()[-2:]]) / 1024

    small, large = peak_mib(200), peak_mib(1000)
    for who, a, b in zip(["caller", "workers"], small, large, strict=True):
        print(f"peak RSS of the {who}: {a:.1f} -> {b:.1f} MiB")
        assert b - a < 20, f"peak RSS of the {who}: {a:.0f} MiB for 200 images, {b:.0f} MiB for 1000"


@pytest.mark.parametrize(
    ("prelude", "expected"),
    [
        ("", "fork"),  # the build_cache stage: nothing but numpy, pandas, PIL loaded
        ("import torch", "forkserver"),  # torch's thread pools are not to be forked
        ("import threading, time; threading.Thread(target=time.sleep, args=(5,), daemon=True).start()",
         "forkserver"),  # another thread could hold a lock the child would inherit
    ],
)
def test_workers_are_forked_only_where_it_is_safe(prelude, expected):
    code = f"{prelude}\nfrom deepfake_workflow.cache import _pool_context\nprint(_pool_context().get_start_method())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == expected


def test_rows_the_disk_refuses_to_take_directly_go_through_the_page_cache(tmp_path, monkeypatch):
    # With "pages" of 256 bytes, rows of 768 bytes are opened for direct I/O, but their file
    # offsets are not 4 KiB aligned and ext4 refuses the writes (EINVAL): every row must
    # still land, through the ordinary descriptor.
    monkeypatch.setattr(cache_module, "_PAGE", 256)
    img_dir = tmp_path / "imgs"
    names = _make_images(img_dir, 9)
    job = cache_module._Job(str(tmp_path / "probe.npy"), 256, str(img_dir), SIZE, "squash", None)
    (tmp_path / "probe.npy").write_bytes(b"")
    fd = cache_module._open_direct(job)
    assert fd is not None  # the fallback below is what is under test
    os.close(fd)
    for workers in (1, 2):
        build_cache(_items(names), img_dir, tmp_path / f"c{workers}", size=SIZE, resize="squash",
                    workers=workers, progress=False)
        cached = np.load(tmp_path / f"c{workers}" / "images.npy")
        assert cached.tobytes() == np.stack([load_rgb(img_dir / n, SIZE, "squash") for n in names]).tobytes()
