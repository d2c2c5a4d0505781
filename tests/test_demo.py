"""Tests of the procedurally generated demo data set (deepfake_workflow.demo)."""
from __future__ import annotations

import csv
import hashlib
import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepfake_workflow import demo
from deepfake_workflow.config import validate_config
from deepfake_workflow.errors import ConfigError, DataError

SMALL = dict(n_train=60, n_val=40, n_test=40, min_size=96, max_size=160)

# libjpeg's base luminance table (IJG, Annex K); scaled by quality to make the real tables
BASE_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57,
    69, 56, 14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64,
    81, 104, 113, 92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99])


def jpeg_quality(img: Image.Image) -> int:
    """The IJG quality whose scaled luminance table is closest to the file's table."""
    observed = np.sort(np.asarray(img.quantization[0]))
    def error(q: int) -> int:
        scale = 5000 / q if q < 50 else 200 - 2 * q
        table = np.clip((BASE_LUMA * scale + 50) // 100, 1, 255)
        return int(np.abs(np.sort(table) - observed).sum())
    return min(range(1, 101), key=error)


def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo") / "raw"
    summary = demo.write_demo_dataset(root, seed=7, **SMALL)
    return root, summary


def test_layout_and_label_files(small_demo):
    root, summary = small_demo
    assert sorted(p.name for p in root.iterdir()) == ["methods.csv", "phase1", "phase2"]
    assert sorted(p.name for p in (root / "phase1").iterdir()) == [
        "trainset", "trainset_label.txt", "valset", "valset_label.txt"]
    assert sorted(p.name for p in (root / "phase2").iterdir()) == [
        "testset1_seen", "testset1_seen_label.txt", "testset1_seen_nolabel.txt"]

    expected = {"trainset": ("phase1", 60), "valset": ("phase1", 40), "testset1_seen": ("phase2", 40)}
    labels = {}
    for split, (phase, n) in expected.items():
        header, rows = read_csv(root / phase / f"{split}_label.txt")
        assert header == ["img_name", "target"]
        assert len(rows) == n == summary["splits"][split]["n"]
        files = {p.name for p in (root / phase / split).iterdir()}
        assert files == {name for name, _ in rows}  # every labelled image exists, no extras
        for name, target in rows:
            assert len(name) == 36 and name.endswith(".jpg")
            int(name[:32], 16)  # 32 hex digits
            data = (root / phase / split / name).read_bytes()
            assert hashlib.md5(data).hexdigest() + ".jpg" == name
            assert target in ("0", "1")
            labels[name] = (split, int(target))

    header, rows = read_csv(root / "phase2" / "testset1_seen_nolabel.txt")
    assert header == ["img_name"]
    assert all(len(r) == 1 for r in rows)
    assert [r[0] for r in rows] == [r[0] for r in read_csv(root / "phase2" / "testset1_seen_label.txt")[1]]


def test_methods_file_consistent_with_labels(small_demo):
    root, summary = small_demo
    header, rows = read_csv(root / "methods.csv")
    assert header == ["img_name", "split", "method"]
    label_of = {}
    for split, phase in (("trainset", "phase1"), ("valset", "phase1"), ("testset1_seen", "phase2")):
        for name, target in read_csv(root / phase / f"{split}_label.txt")[1]:
            label_of[name] = (split, int(target))
    assert len(rows) == len(label_of) == len({r[0] for r in rows})
    known = {"real", *summary["train_methods"], *summary["held_out_methods"]}
    for name, split, method in rows:
        assert label_of[name] == (split, int(method != "real"))
        assert method in known
    held_out = set(summary["held_out_methods"])
    assert held_out and not held_out & set(summary["train_methods"])
    by_split = {s: {m for _, s2, m in rows if s2 == s} for s in ("trainset", "valset", "testset1_seen")}
    assert not by_split["trainset"] & held_out
    assert held_out <= by_split["valset"] and held_out <= by_split["testset1_seen"]
    assert set(summary["train_methods"]) <= by_split["trainset"]


def test_class_ratio_and_method_counts(small_demo):
    root, summary = small_demo
    for split, phase, ratio in (("trainset", "phase1", 0.8), ("valset", "phase1", 0.6),
                                ("testset1_seen", "phase2", 0.6)):
        targets = [int(t) for _, t in read_csv(root / phase / f"{split}_label.txt")[1]]
        assert abs(np.mean(targets) - ratio) <= 0.03
        assert summary["splits"][split]["fake_ratio"] == pytest.approx(np.mean(targets))
        counts = summary["splits"][split]["methods"]
        assert sum(counts.values()) == len(targets)
        assert counts["real"] == targets.count(0)
        fake_counts = [c for m, c in counts.items() if m != "real"]
        assert max(fake_counts) - min(fake_counts) <= 1  # forgery kinds balanced


def test_sizes_and_qualities_in_range(small_demo):
    root, _ = small_demo
    for path in (root / "phase1" / "trainset").iterdir():
        with Image.open(path) as img:
            assert img.format == "JPEG" and img.mode == "RGB"
            assert 96 <= img.width <= 160 and 96 <= img.height <= 160
            assert 75 <= jpeg_quality(img) <= 97


def test_size_and_quality_do_not_depend_on_method():
    # the same (seed, split, index) gives the same size and JPEG tables whatever the label
    for index in range(3):
        shapes, tables = set(), set()
        for method in ("real", *demo.FORGERIES):
            with Image.open(io.BytesIO(demo.render_image(3, 2, index, method, 200, 400))) as img:
                shapes.add(img.size)
                tables.add(tuple(img.quantization[0]))
        assert len(shapes) == 1 and len(tables) == 1


def test_forgery_changes_the_face_not_the_background():
    real = np.asarray(Image.open(io.BytesIO(demo.render_image(5, 1, 0, "real", 300, 300))), np.float32)
    for method in demo.FORGERIES:
        fake = np.asarray(Image.open(io.BytesIO(demo.render_image(5, 1, 0, method, 300, 300))),
                          np.float32)
        diff = np.abs(fake - real).mean(axis=2)
        assert diff.mean() > 0.3, method  # a visible trace, not a few pixels
        centre = diff[45:255, 45:255].sum()  # the face sits near the middle
        assert centre / diff.sum() > 0.9, method


def test_same_seed_same_bytes_any_worker_count(tmp_path):
    args = dict(n_train=10, n_val=10, n_test=10, min_size=96, max_size=128)
    one = demo.write_demo_dataset(tmp_path / "a", seed=11, workers=1, **args)
    two = demo.write_demo_dataset(tmp_path / "b", seed=11, workers=2, **args)
    assert one == two
    assert tree_bytes(tmp_path / "a") == tree_bytes(tmp_path / "b")
    demo.write_demo_dataset(tmp_path / "c", seed=12, **args)
    def names(root):
        return {p.name for p in root.rglob("*.jpg")}
    assert not names(tmp_path / "a") & names(tmp_path / "c")


def test_rerun_replaces_an_earlier_demo(tmp_path):
    args = dict(n_train=10, n_val=10, n_test=10, min_size=64, max_size=80)
    root = tmp_path / "raw"
    demo.write_demo_dataset(root, seed=1, **args)
    demo.write_demo_dataset(root, seed=2, **args)
    fresh = tmp_path / "fresh"
    demo.write_demo_dataset(fresh, seed=2, **args)
    assert tree_bytes(root) == tree_bytes(fresh)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []


def test_failed_run_leaves_no_root(tmp_path, monkeypatch):
    calls = []

    def render_then_fail(*args):
        calls.append(args)
        if len(calls) == 5:
            raise KeyboardInterrupt  # as if the job were killed half-way
        return real_render(*args)

    real_render = demo.render_image
    monkeypatch.setattr(demo.dataset, "render_image", render_then_fail)  # where the writer looks it up
    with pytest.raises(KeyboardInterrupt):
        demo.write_demo_dataset(tmp_path / "raw", seed=1, n_train=10, n_val=10, n_test=10,
                                min_size=64, max_size=80)
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_replace_a_foreign_folder(tmp_path):
    root = tmp_path / "raw"
    root.mkdir()
    (root / "precious.jpg").write_bytes(b"x")
    with pytest.raises(DataError, match="methods.csv"):
        demo.write_demo_dataset(root, seed=1, n_train=10, n_val=10, n_test=10)
    assert (root / "precious.jpg").read_bytes() == b"x"


@pytest.mark.parametrize("kwargs, key", [
    (dict(seed=-1), "seed"),
    (dict(seed=1, n_train=3), "n_train"),
    (dict(seed=1, n_val=2.5), "n_val"),
    (dict(seed=1, n_test=10.0), "config key 'data.demo.n_test': got 10.0, expected type integer"),
    (dict(seed=1, min_size=300, max_size=200), "min_size"),
    (dict(seed=1, max_size=4097), "config key 'data.demo.max_size': got 4097, expected <= 4096"),  # schema maximum
    (dict(seed=1, workers=0), "argument 'workers': got 0, expected >= 1"),
])
def test_bad_arguments_name_the_key(tmp_path, kwargs, key):
    with pytest.raises(ConfigError, match=re.escape(key)):
        demo.write_demo_dataset(tmp_path / "raw", **kwargs)
    assert not (tmp_path / "raw").exists()


@pytest.mark.parametrize("demo_cfg", [dict(max_size=4097), dict(min_size=300, max_size=200), dict(n_val=3)])
def test_arguments_are_checked_as_the_config_checks_them(tmp_path, demo_cfg):
    # one source of rules: the same bad value gives the same line from a config and from a call
    with pytest.raises(ConfigError) as from_config:
        validate_config({"data": {"demo": demo_cfg}})
    with pytest.raises(ConfigError) as from_call:
        demo.write_demo_dataset(tmp_path / "raw", seed=1, **demo_cfg)
    assert str(from_call.value).splitlines()[-1] == str(from_config.value).splitlines()[-1]


def image_features(path: Path) -> list[float]:
    with Image.open(path) as img:
        rgb = np.asarray(img.convert("RGB"), np.float32).mean(axis=(0, 1))
        return [img.width, img.height, path.stat().st_size, *rgb, jpeg_quality(img)]


def test_no_shortcut_from_global_statistics(tmp_path):
    """Size, file size, mean colour and JPEG quality must not give the label away."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    root = tmp_path / "raw"
    demo.write_demo_dataset(root, seed=2024, n_train=300, n_val=200, n_test=10, workers=2)

    def load(split):
        _, rows = read_csv(root / "phase1" / f"{split}_label.txt")
        x = np.array([image_features(root / "phase1" / split / name) for name, _ in rows])
        return x, np.array([int(t) for _, t in rows])

    x_train, y_train = load("trainset")
    x_val, y_val = load("valset")
    models = {
        "logistic": make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
        "forest": RandomForestClassifier(n_estimators=200, min_samples_leaf=3, random_state=0),
    }
    for name, model in models.items():
        model.fit(x_train, y_train)
        auc = roc_auc_score(y_val, model.predict_proba(x_val)[:, 1])
        assert auc < 0.65, f"{name} predicts the label from global statistics (AUC {auc:.3f})"
