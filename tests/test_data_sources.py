"""The data stages on data laid out like the real set: a local copy read in place, and
archives served by a real HTTP server on loopback (phase1 and phase2 as separate archives)."""
import hashlib
import io
import json
import shutil
import tarfile

import numpy as np
import pandas as pd
import pytest
from conftest import LOCAL_COPY_SIZES as SMALL
from conftest import jobs_run, snakemake, write_config
from http_server import LoopbackServer

DATA_TARGETS = ["results/folds.csv", "results/cache/train/images.npy", "results/cache/val/images.npy"]


@pytest.fixture
def real_layout(local_copy):
    return local_copy


def cache_names(workdir, split):
    return pd.read_csv(workdir / f"results/cache/{split}/index.csv")["img_name"].tolist()


def test_local_copy_is_read_in_place_and_phase2_is_the_test_split(real_layout, tmp_path):
    write_config(tmp_path, {"data": {"source": "local", "root": str(real_layout)}, "cache": {"size": 24},
                            "folds": {"k": 2}})
    snakemake(tmp_path, *DATA_TARGETS, "results/cache/test/images.npy", "results/data/dataset.json")
    manifest = json.loads((tmp_path / "results/data/dataset.json").read_text())
    assert manifest["source"] == "local" and manifest["test_source"] == "test"
    assert manifest["splits"]["train"]["images"] == str(real_layout / "phase1/trainset")
    train = json.loads((tmp_path / "results/data/splits/train.json").read_text())
    assert train == manifest["splits"]["train"] and train["n_images"] == SMALL["n_train"]
    assert not (tmp_path / "results/data/raw").exists(), "local data must not be copied"
    labels = pd.read_csv(real_layout / "phase1/trainset_label.txt")
    assert cache_names(tmp_path, "train") == labels["img_name"].tolist()
    assert len(cache_names(tmp_path, "test")) == SMALL["n_test"]


def test_local_copy_without_phase2_scores_the_validation_split(real_layout, tmp_path):
    phase1_only = tmp_path / "phase1_only"
    phase1_only.mkdir()
    (phase1_only / "phase1").symlink_to(real_layout / "phase1")
    write_config(tmp_path, {"data": {"source": "local", "root": str(phase1_only)}, "cache": {"size": 24},
                            "folds": {"k": 2}})
    proc = snakemake(tmp_path, "-n")
    assert "results/cache/test" not in proc.stdout + proc.stderr  # test predictions read the val cache
    assert "predictions/fold0/test.csv" in proc.stdout


def test_editing_a_local_label_file_reruns_only_that_splits_stages(real_layout, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(real_layout, copy, symlinks=True)
    work = tmp_path / "work"
    work.mkdir()
    write_config(work, {"data": {"source": "local", "root": str(copy)}, "cache": {"size": 24}, "folds": {"k": 2}})
    snakemake(work, *DATA_TARGETS)
    train_cache = work / "results/cache/train/images.npy"
    labels = copy / "phase1/trainset_label.txt"
    labels.touch()  # a new mtime alone is not a change (Snakemake compares small inputs by checksum)
    assert "Nothing to be done" in snakemake(work, "-n", *DATA_TARGETS).stdout

    val_labels = copy / "phase1/valset_label.txt"
    df = pd.read_csv(val_labels)
    df.loc[0, "target"] = 1 - df.loc[0, "target"]  # a relabelled validation image
    df.to_csv(val_labels, index=False)
    before = train_cache.stat().st_mtime_ns, (work / "results/folds.csv").stat().st_mtime_ns
    proc = snakemake(work, *DATA_TARGETS)
    assert sorted(jobs_run(proc)) == ["build_cache", "check_split"]  # the val split's, nothing else
    assert (train_cache.stat().st_mtime_ns, (work / "results/folds.csv").stat().st_mtime_ns) == before
    val_index = pd.read_csv(work / "results/cache/val/index.csv")
    assert val_index.loc[val_index["img_name"] == df.loc[0, "img_name"], "target"].item() == df.loc[0, "target"]

    df = pd.read_csv(labels)
    df.loc[0, "target"] = 1 - df.loc[0, "target"]  # a relabelled training image
    df.to_csv(labels, index=False)
    proc = snakemake(work, *DATA_TARGETS)
    assert sorted(jobs_run(proc)) == ["build_cache", "check_split", "make_folds"]
    assert pd.read_csv(work / "results/folds.csv").loc[0, "target"] == df.loc[0, "target"]


def tar_of(root, top):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(root / top, arcname=top)
    return buf.getvalue()


def test_archives_downloaded_over_http_verified_and_extracted(real_layout, tmp_path):
    archives = {"/multiFFDI-phase1.tar.gz": tar_of(real_layout, "phase1"),
                "/multiFFDI-phase2.tar.gz": tar_of(real_layout, "phase2")}
    with LoopbackServer(archives) as server:
        urls = [{"url": server.url(p), "sha256": hashlib.sha256(body).hexdigest()} for p, body in archives.items()]
        write_config(tmp_path, {"data": {"source": "url", "urls": urls}, "cache": {"size": 24}, "folds": {"k": 2}})
        snakemake(tmp_path, *DATA_TARGETS, "results/cache/test/images.npy")
    raw = tmp_path / "results/data/raw"
    assert (raw / "phase1/trainset_label.txt").read_bytes() == (real_layout / "phase1/trainset_label.txt").read_bytes()
    assert len(cache_names(tmp_path, "test")) == SMALL["n_test"]
    images = np.load(tmp_path / "results/cache/val/images.npy", mmap_mode="r")
    assert images.shape == (SMALL["n_val"], 24, 24, 3)


def test_bad_checksum_fails_the_fetch_with_a_clear_error(real_layout, tmp_path):
    body = tar_of(real_layout, "phase1")
    with LoopbackServer({"/phase1.tar.gz": body}) as server:
        write_config(tmp_path, {"data": {"source": "url", "urls": [{"url": server.url("/phase1.tar.gz"),
                                                                       "sha256": "0" * 64}]}})
        proc = snakemake(tmp_path, "results/data/dataset.json", check=False)
    assert proc.returncode != 0
    assert "sha256" in (proc.stdout + proc.stderr).lower()
    assert not (tmp_path / "results/data/dataset.json").exists()


def test_missing_image_in_local_copy_names_file_and_row(real_layout, tmp_path):
    broken = tmp_path / "broken"
    (broken / "phase1").mkdir(parents=True)
    for name in ("valset", "valset_label.txt", "trainset_label.txt"):
        (broken / "phase1" / name).symlink_to(real_layout / "phase1" / name)
    (broken / "phase1/trainset").mkdir()
    labels = pd.read_csv(real_layout / "phase1/trainset_label.txt")
    for name in labels["img_name"][1:]:
        (broken / "phase1/trainset" / name).symlink_to(real_layout / "phase1/trainset" / name)
    work = tmp_path / "work"
    work.mkdir()
    write_config(work, {"data": {"source": "local", "root": str(broken)}})
    proc = snakemake(work, "results/data/dataset.json", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "row 2" in out and labels["img_name"][0] in out
    # A failed job ends in Snakemake's own one-line summary and the stage's error line, never
    # a Python traceback (a name imported into the Snakefile's namespace can break that).
    assert "At least one job did not complete successfully" in out and "Traceback" not in out
