"""End-to-end: the real Snakemake workflow on a tiny demo, and what a second run re-runs."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, TINY_CONFIG, jobs_run, snakemake, write_config


def test_full_run_writes_a_valid_submission_and_report(tiny_run):
    workdir, proc = tiny_run
    res = workdir / "results"
    n_test = TINY_CONFIG["data"]["demo"]["n_test"]
    test_list = pd.read_csv(res / "data/raw/phase2/testset1_seen_nolabel.txt")
    sub = pd.read_csv(res / "submission.csv")
    assert list(sub.columns) == ["img_name", "y_pred"]
    assert len(sub) == n_test and set(sub["img_name"]) == set(test_list["img_name"])
    assert sub["y_pred"].between(0, 1).all() and not sub["y_pred"].isna().any()

    metrics = json.loads((res / "reports/metrics.json").read_text())
    assert 0 <= metrics["val"]["auc"] <= 1 and 0 <= metrics["oof"]["auc"] <= 1
    assert set(metrics["folds"]) == {"0", "1"}
    assert metrics["submission"]["strategy"] == "ensemble"
    assert "val_by_method" in metrics and metrics["val_by_method"]
    html = (res / "reports/report.html").read_text()
    assert "data:image/png;base64" in html and "http://" not in html
    assert (res / "reports/plots/roc.png").stat().st_size > 1000

    images = np.load(res / "cache/train/images.npy", mmap_mode="r")
    index = pd.read_csv(res / "cache/train/index.csv")
    assert images.shape == (len(index), 32, 32, 3) and images.dtype == np.uint8
    folds = pd.read_csv(res / "folds.csv")
    assert sorted(folds["fold"].unique()) == [0, 1] and len(folds) == TINY_CONFIG["data"]["demo"]["n_train"]
    for fold in (0, 1):
        history = pd.read_csv(res / f"models/fold{fold}/history.csv")
        assert len(history) == TINY_CONFIG["train"]["epochs"]
    assert not list(res.rglob(".tmp-*")), "temporary files left behind"


def test_run_records_its_provenance(tiny_run):
    """provenance.json: versions, git, the sha256 of the effective config and of the manifest;
    every best.pt: the environment it was trained in."""
    import torch

    from deepfake_workflow.config import validate_config
    from deepfake_workflow.provenance import config_sha256, file_sha256, package_versions

    res = tiny_run[0] / "results"
    prov = json.loads((res / "reports/provenance.json").read_text())
    assert prov["config_sha256"] == config_sha256(validate_config(TINY_CONFIG))
    assert prov["data_manifest_sha256"] == file_sha256(res / "data/dataset.json")
    assert prov["versions"] == package_versions()
    assert prov["git"]["commit"] != "" and prov["cpu"] and prov["platform"]
    html = (res / "reports/report.html").read_text()
    assert prov["config_sha256"] in html and prov["versions"]["torch"] in html
    for fold in (0, 1):
        ckpt = torch.load(res / f"models/fold{fold}/best.pt", weights_only=True)
        assert ckpt["provenance"]["versions"] == prov["versions"] and ckpt["provenance"]["device"] == "cpu"


def test_second_run_does_nothing(tiny_run):
    workdir, _ = tiny_run
    proc = snakemake(workdir, "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr


@pytest.mark.parametrize("override, expected", [
    ("report__gallery_size=2", {"report"}),
    ("submit__strategy=best_fold", {"report", "submit"}),
    ("predict__tta=hflip", {"predict", "report", "submit"}),
    ("train__lr=1.0e-3", {"train", "predict", "report", "submit"}),
    ("cache__size=48", {"build_cache", "train", "predict", "report", "submit"}),
    ("folds__k=3", {"make_folds", "train", "predict", "report", "submit"}),
])
def test_config_change_reruns_only_what_depends_on_it(tiny_run, override, expected):
    workdir, _ = tiny_run
    proc = snakemake(workdir, "-n", "--config", override)
    assert set(jobs_run(proc)) - {"all"} == expected


def test_report_setting_rerun_really_leaves_training_alone(tiny_run, tmp_path):
    workdir = tmp_path / "copy"
    shutil.copytree(tiny_run[0], workdir, symlinks=True)
    checkpoint = workdir / "results/models/fold0/best.pt"
    before = checkpoint.stat().st_mtime_ns
    cfg = {**TINY_CONFIG, "report": {"gallery_size": 2, "threshold_policy": "eer"}}
    write_config(workdir, cfg)
    proc = snakemake(workdir)
    assert set(jobs_run(proc)) - {"all"} == {"report"}
    assert checkpoint.stat().st_mtime_ns == before
    metrics = json.loads((workdir / "results/reports/metrics.json").read_text())
    assert metrics["threshold"]["policy"] == "eer"


def test_data_stages_incremental(tmp_path):
    """Changing cache.size re-runs the cache only (not the data); folds.k re-runs the folds only."""
    cfg = {**TINY_CONFIG, "data": {"source": "demo", "demo": {"n_train": 40, "n_val": 20, "n_test": 20,
                                                               "min_size": 80, "max_size": 120}}}
    write_config(tmp_path, cfg)
    targets = ["results/folds.csv", "results/cache/train/images.npy"]
    snakemake(tmp_path, *targets)
    raw_mtime = (tmp_path / "results/data/dataset.json").stat().st_mtime_ns
    folds_before = (tmp_path / "results/folds.csv").read_bytes()

    write_config(tmp_path, {**cfg, "cache": {"size": 40}})
    proc = snakemake(tmp_path, *targets)
    assert set(jobs_run(proc)) == {"build_cache"}
    assert np.load(tmp_path / "results/cache/train/images.npy", mmap_mode="r").shape[1] == 40
    assert (tmp_path / "results/data/dataset.json").stat().st_mtime_ns == raw_mtime
    assert (tmp_path / "results/folds.csv").read_bytes() == folds_before

    write_config(tmp_path, {**cfg, "cache": {"size": 40}, "folds": {"k": 4}})
    proc = snakemake(tmp_path, *targets)
    assert set(jobs_run(proc)) == {"make_folds"}
    assert sorted(pd.read_csv(tmp_path / "results/folds.csv")["fold"].unique()) == [0, 1, 2, 3]


def test_bad_config_fails_before_any_job(tmp_path):
    write_config(tmp_path, {**TINY_CONFIG, "train": {"lr": -1}})
    proc = snakemake(tmp_path, check=False)
    assert proc.returncode != 0
    assert "config key 'train.lr': got -1, expected > 0" in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


def test_parameter_budget_checked_before_any_job(tmp_path):
    write_config(tmp_path, {**TINY_CONFIG, "model": {"name": "test_efficientnet", "pretrained": False,
                                                     "max_params": 1000}})
    proc = snakemake(tmp_path, check=False)
    assert proc.returncode != 0 and "model.max_params" in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


def test_lint_has_no_findings():
    proc = snakemake(REPO, "--lint", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "Lints for" not in out, out


def test_score_images_matches_the_pipeline_predictions(tiny_run, tmp_path):
    """Image paths in, P(fake) out: the same numbers as the predict stage on the same images."""
    workdir, _ = tiny_run
    res = workdir / "results"
    out = tmp_path / "scores.csv"
    proc = subprocess.run([sys.executable, str(REPO / "scripts/score_images.py"), "--checkpoint",
                           res / "models/fold0/best.pt", res / "data/raw/phase2/testset1_seen", "-o", out,
                           "--device", "cpu"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    scores = pd.read_csv(out)
    scores["img_name"] = scores["img_name"].map(lambda p: p.rsplit("/", 1)[-1])
    expected = pd.read_csv(res / "predictions/fold0/test.csv")
    merged = expected.merge(scores, on="img_name", suffixes=("_predict", "_score"))
    assert len(merged) == len(expected) == TINY_CONFIG["data"]["demo"]["n_test"]
    assert np.allclose(merged["y_pred_predict"], merged["y_pred_score"], atol=1e-5)


def test_score_images_on_a_missing_path_is_a_clear_error(tiny_run, tmp_path):
    checkpoint = tiny_run[0] / "results/models/fold0/best.pt"
    proc = subprocess.run([sys.executable, str(REPO / "scripts/score_images.py"), "--checkpoint", checkpoint,
                           tmp_path / "nope"], capture_output=True, text=True)
    assert proc.returncode == 2 and "input not found" in proc.stderr


def test_snakemake_report_is_browsable(tiny_run, tmp_path):
    workdir, _ = tiny_run
    out = tmp_path / "snakemake_report.html"
    snakemake(workdir, "--report", str(out))
    html = out.read_text()
    assert out.stat().st_size > 10_000 and "roc.png" in html and "submission.csv" in html


def test_bf16_channels_last_run_on_the_cpu_ends_in_a_valid_submission(tmp_path):
    """The GPU path's settings, end to end on the CPU (bf16 autocast, channels_last): the one extra
    tiny run; fp16, compile and gradient clipping are covered at unit level (test_gpu_path.py)."""
    cfg = {**TINY_CONFIG, "train": {**TINY_CONFIG["train"], "epochs": 1, "precision": "bf16", "channels_last": True}}
    write_config(tmp_path, cfg)
    snakemake(tmp_path)
    res = tmp_path / "results"
    sub = pd.read_csv(res / "submission.csv")
    assert len(sub) == TINY_CONFIG["data"]["demo"]["n_test"]
    assert sub["y_pred"].between(0, 1).all() and not sub["y_pred"].isna().any()
    for fold in (0, 1):
        metrics = json.loads((res / f"models/fold{fold}/metrics.json").read_text())
        assert metrics["precision"] == "bf16" and metrics["device"] == "cpu"
