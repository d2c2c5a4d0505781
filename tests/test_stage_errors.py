"""Stage programs on bad input and failing disks: one clear line, exit code 2, nothing finished-looking."""
import json
import resource
import signal
import subprocess
import sys

import pandas as pd
import pytest
from conftest import REPO
from PIL import Image


def run_stage(script, *args, limit_file_bytes=None, cwd=None):
    def limit():  # a full disk, as the process sees it: writes past the limit fail with EFBIG
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file_bytes, limit_file_bytes))

    return subprocess.run([sys.executable, str(REPO / "scripts" / script), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, preexec_fn=limit if limit_file_bytes else None)


@pytest.fixture
def small_split(tmp_path):
    images = tmp_path / "trainset"
    images.mkdir()
    rows = []
    for i in range(6):
        name = f"{i:032x}.jpg"
        Image.new("RGB", (64, 48), (40 * i, 90, 200)).save(images / name, quality=90)
        rows.append((name, i % 2))
    labels = tmp_path / "trainset_label.txt"
    pd.DataFrame(rows, columns=["img_name", "target"]).to_csv(labels, index=False)
    manifest = tmp_path / "train.json"
    manifest.write_text(json.dumps({"split": "train", "images": str(images), "labels": str(labels),
                                    "n_images": 6, "n_fake": 3, "n_real": 3, "labels_sha256": "0" * 64}))
    return tmp_path, manifest


def test_disk_full_during_cache_build_is_a_clear_error_and_leaves_no_cache(small_split):
    root, manifest = small_split
    out = root / "cache/train"
    proc = run_stage("build_cache.py", "--config-json", json.dumps({"cache": {"size": 64}}),
                     "--split-manifest", manifest,
                     "--out-dir", out, "--no-progress", limit_file_bytes=20_000)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().startswith("error:") and "Traceback" not in proc.stderr
    assert "too large" in proc.stderr.lower() or "space" in proc.stderr.lower()
    assert not out.exists() and not [p for p in (root / "cache").iterdir() if not p.name.startswith(".tmp-")]


def test_unwritable_output_folder_is_a_clear_error(small_split):
    root, manifest = small_split
    (root / "blocker").write_text("a file where a folder should be")
    proc = run_stage("make_folds.py", "--config-json", json.dumps({"folds": {"k": 2}, "seed": 0}),
                     "--split-manifest", manifest,
                     "--out", root / "blocker/folds.csv")
    assert proc.returncode == 2 and "blocker" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_config_json_names_the_key(small_split):
    root, manifest = small_split
    proc = run_stage("make_folds.py", "--config-json", json.dumps({"folds": {"k": 1}, "seed": 0}),
                     "--split-manifest", manifest,
                     "--out", root / "folds.csv")
    assert proc.returncode == 2 and "'folds.k': got 1, expected >= 2" in proc.stderr
    assert not (root / "folds.csv").exists()


def test_fold_with_one_class_is_refused(small_split):
    root, manifest = small_split
    proc = run_stage("make_folds.py", "--config-json", json.dumps({"folds": {"k": 4}, "seed": 0}),
                     "--split-manifest", manifest,
                     "--out", root / "folds.csv")
    assert proc.returncode == 2 and "no fold ends up with one class" in proc.stderr


def test_stage_with_dvc_style_config_file_and_override(small_split, tmp_path):
    root, manifest = small_split
    config = tmp_path / "config.yaml"
    config.write_text("folds:\n  k: 3\n")
    proc = run_stage("make_folds.py", "--config", config, "--set", "folds.k=2", "--split-manifest", manifest,
                     "--out", root / "folds.csv")
    assert proc.returncode == 0, proc.stderr
    assert sorted(pd.read_csv(root / "folds.csv")["fold"].unique()) == [0, 1]


def test_library_log_lines_reach_stderr_as_plain_lines():
    # run_main sets the format: progress lines as they are, warnings prefixed, other libraries' chatter left out
    code = ("import logging\n"
            "from deepfake_workflow.cli import run_main\n"
            "def main():\n"
            "    logging.getLogger('deepfake_workflow.training').info('fold 0: resuming after epoch 2')\n"
            "    logging.getLogger('deepfake_workflow.devices').warning('CUDA is already initialised')\n"
            "    logging.getLogger('some_library').info('chatter')\n"
            "run_main(main)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == ["fold 0: resuming after epoch 2", "warning: CUDA is already initialised"]
    assert proc.stdout == ""
