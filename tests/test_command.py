"""The `deepfake-workflow` command (run as `python -m deepfake_workflow.command`, which is what the
installed entry point calls: test_environment checks the wheel's entry point)."""
import io
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import TINY_CONFIG, write_config

from deepfake_workflow.config import validate_config


def command(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "deepfake_workflow.command", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_score_help():
    proc = command("score", "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: deepfake-workflow score")
    for option in ("--checkpoint", "--on-bad-image", "--bad-out", "--workers", "--out"):
        assert option in proc.stdout


def test_check_config_prints_the_effective_config(tmp_path):
    write_config(tmp_path, TINY_CONFIG)
    proc = command("check-config", tmp_path / "config.yaml", "--set", "train.lr=0.01", "--set", "folds.k=3")
    assert proc.returncode == 0, proc.stderr
    expected = validate_config({**TINY_CONFIG, "train": {**TINY_CONFIG["train"], "lr": 0.01},
                                "folds": {"k": 3}})
    assert yaml.safe_load(proc.stdout) == expected  # every default filled in


@pytest.mark.parametrize("args, message", [
    (["--set", "train.lr=-1"], "config key 'train.lr': got -1, expected > 0"),
    (["--set", "model.max_params=1000"], "model.max_params"),  # the parameter budget, as the Snakefile checks
    (["--set", "data.source=local", "--set", "data.root=/nonexistent/multiFFDI"], "/nonexistent/multiFFDI"),
])
def test_check_config_bad_config_is_one_error_line(tmp_path, args, message):
    write_config(tmp_path, TINY_CONFIG)
    proc = command("check-config", tmp_path / "config.yaml", *args)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_check_config_missing_file(tmp_path):
    proc = command("check-config", cwd=tmp_path)  # default: ./config.yaml
    assert proc.returncode == 2 and proc.stderr.startswith("error: config file not found: config.yaml")


@pytest.fixture(scope="module")
def images(tiny_run, tmp_path_factory):
    """Three test images of the tiny run, a corrupt JPEG and an empty file, in a folder and a list."""
    root = tmp_path_factory.mktemp("images")
    good = sorted((tiny_run[0] / "results/data/raw/phase2/testset1_seen").iterdir())[:3]
    for path in good:
        shutil.copy(path, root / path.name)
    (root / "zz_corrupt.jpg").write_bytes(good[0].read_bytes()[:200])
    (root / "zz_empty.png").write_bytes(b"")
    return root, [p.name for p in good]


def checkpoints(tiny_run):
    return [tiny_run[0] / f"results/models/fold{f}/best.pt" for f in (0, 1)]


def test_score_skips_and_lists_bad_images(tiny_run, images, tmp_path):
    root, good = images
    c0, c1 = checkpoints(tiny_run)
    out, bad = tmp_path / "scores.csv", tmp_path / "bad.csv"
    proc = command("score", "-c", c0, "-c", c1, root, "--on-bad-image", "skip", "--bad-out", bad, "-o", out,
                   "-j", "2", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    scores = pd.read_csv(out)
    assert [p.rsplit("/", 1)[-1] for p in scores["img_name"]] == good and scores["y_pred"].between(0, 1).all()
    listed = pd.read_csv(bad)
    assert [p.rsplit("/", 1)[-1] for p in listed["img_name"]] == ["zz_corrupt.jpg", "zz_empty.png"]
    assert "empty file" in listed["reason"].iloc[1]
    assert proc.stderr.count("warning: skipped unreadable image") == 2
    assert "3 images scored, 2 unreadable skipped" in proc.stdout
    assert "img" in proc.stderr  # the progress bar

    # the ensemble is the mean of its members
    singles = []
    for c in (c0, c1):
        one = command("score", "-c", c, *[root / g for g in good], "--device", "cpu", "--no-progress")
        assert one.returncode == 0 and one.stderr == "", one.stderr
        singles.append(pd.read_csv(io.StringIO(one.stdout))["y_pred"].to_numpy())
    np.testing.assert_allclose(scores["y_pred"].to_numpy(), (singles[0] + singles[1]) / 2, atol=2e-6)


def test_score_stops_at_the_first_bad_image_by_default(tiny_run, images, tmp_path):
    root, _ = images
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(str(p) for p in sorted(root.iterdir())))
    proc = command("score", "-c", checkpoints(tiny_run)[0], listing, "-o", tmp_path / "s.csv")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "zz_corrupt.jpg" in proc.stderr and not (tmp_path / "s.csv").exists()


def test_bad_out_needs_skip(tiny_run, images, tmp_path):
    proc = command("score", "-c", checkpoints(tiny_run)[0], images[0], "--bad-out", tmp_path / "b.csv")
    assert proc.returncode == 2 and "--on-bad-image skip" in proc.stderr
