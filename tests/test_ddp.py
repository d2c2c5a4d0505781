"""One fold on several processes (train.devices, DistributedDataParallel), on the CPU with gloo."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO, TINY_CONFIG, copy_of_run, snakemake, write_config
from test_faults import run_until
from test_training import check_checkpoint_reproduces_oof, check_fold_outputs, write_tiny_cache

from deepfake_workflow.cache import open_cache
from deepfake_workflow.distributed import Ranks
from deepfake_workflow.errors import ConfigError
from deepfake_workflow.training import cosine_with_warmup, epoch_keys, rank_keys, train_fold


@pytest.mark.parametrize("augment", [True, False])
def test_rank_shares_are_disjoint_and_make_up_the_one_process_plan(augment):
    plan = epoch_keys(np.arange(3, 103), 16, seed=5, fold=1, epoch=2, max_batches=None, augment=augment)
    assert rank_keys(plan, Ranks(0, 1)) is plan
    for world in (2, 4):
        shares = [rank_keys(plan, Ranks(rank, world)) for rank in range(world)]
        assert all(len(share) == len(plan) for share in shares)  # every process takes every step
        for b, (rows, seed) in enumerate(plan):
            parts = [share[b][0] for share in shares]
            assert all(len(part) == len(rows) // world and np.all(np.diff(part) > 0) for part in parts)
            assert np.array_equal(np.sort(np.concatenate(parts)), rows)  # the global batch, no row twice
            seeds = [share[b][1] for share in shares]
            assert (len(set(seeds)) == world and seed not in seeds) if augment else seeds == [None] * world
        used = np.concatenate([rows for share in shares for rows, _ in share])
        assert len(np.unique(used)) == len(used)
        assert np.array_equal(np.sort(used), np.sort(np.concatenate([rows for rows, _ in plan])))


def test_several_devices_without_their_processes_is_a_clear_error(tmp_path):
    images, index, folds = write_tiny_cache(tmp_path)
    with pytest.raises(ConfigError, match="train.devices is 2 but 1 process"):
        train_fold(images=images, index=index, folds=folds, fold=0, model_cfg={"name": "test_efficientnet"},
                   train_cfg={"devices": 2, "batch_size": 8, "device": "cpu"}, seed=1, out_dir=tmp_path / "out",
                   state_dir=tmp_path / "state", progress=False)


def train_script(folder: Path, fold: int, **train) -> list[str]:
    """scripts/train.py on a tiny cache written to `folder`, as the rule runs it (2 processes, 2 threads)."""
    if not (folder / "folds.csv").exists():
        _, index, folds = write_tiny_cache(folder)
        index.to_csv(folder / "index.csv", index=False)
        (folder / "cache_info.json").write_text(json.dumps({"resize": "squash"}))
        folds.to_csv(folder / "folds.csv", index=False)
    cfg = {"seed": 1, "model": {"name": "test_efficientnet", "pretrained": False},
           "train": {"devices": 2, "batch_size": 8, "device": "cpu", **train}}
    return [sys.executable, str(REPO / "scripts/train.py"), "--config-json", json.dumps(cfg), "--cache-dir",
            str(folder), "--folds", str(folder / "folds.csv"), "--fold", str(fold), "--out-dir",
            str(folder / "out"), "--state-dir", str(folder / "state"), "--threads", "2"]


def test_a_failing_process_fails_the_fold_with_its_message(tmp_path):
    proc = subprocess.run(train_script(tmp_path, fold=5), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "error: fold 5 is not in folds.csv (folds there: [0, 1])" in proc.stderr
    assert re.search(r"error: process [01] of the 2 training this fold failed \(exit code 2\)", proc.stderr), \
        proc.stderr[-3000:]
    assert not (tmp_path / "out").exists()


def processes_in(folder: Path) -> list[int]:
    """Live processes whose working directory is `folder` (a job's launcher and its ranks)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and Path(os.readlink(entry / "cwd")) == folder:
                pids.append(int(entry.name))
        except OSError:  # gone, or a zombie
            pass
    return pids


def wait_until_gone(folder: Path, limit_s: float = 5.0) -> list[int]:
    deadline = time.monotonic() + limit_s
    while processes_in(folder) and time.monotonic() < deadline:
        time.sleep(0.1)
    return processes_in(folder)


def test_killed_launcher_leaves_no_process_training(tmp_path):
    """torchrun starts the ranks in sessions of their own, out of reach of a kill of the job's process
    group; they must die with the launcher, not train on and write outputs. Output to a file, as under
    SLURM or dvc repro (with Snakemake's `| tee` a rank would also die of the broken pipe)."""
    folder = tmp_path.resolve()
    state = folder / "state/last.pt"
    with open(folder / "train.log", "w") as log:
        proc = subprocess.Popen(train_script(folder, fold=0, epochs=100), cwd=folder, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not state.exists():
            assert proc.poll() is None and time.monotonic() < deadline, (folder / "train.log").read_text()[-3000:]
            time.sleep(0.05)
        assert len(processes_in(folder)) == 3  # the launcher and 2 ranks
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        left = wait_until_gone(folder)
        assert left == [], f"processes {left} still train after their launcher was killed"
        assert not (folder / "out").exists()
    finally:
        for pid in processes_in(folder):  # only after a failure: what this test started
            os.kill(pid, signal.SIGKILL)


# efficientnet_lite0 (random weights): epochs long enough (about a second on 2 cores) to kill
# the job after the first one; 4 of the 8 images of each batch per process.
DDP_CONFIG = {**TINY_CONFIG, "model": {"name": "efficientnet_lite0", "pretrained": False},
              "train": {**TINY_CONFIG["train"], "devices": 2, "epochs": 3, "batch_size": 8}}
FOLD0 = ["results/models/fold0/metrics.json", "--cores", "2", "--resources", "gpu=2"]


def test_two_process_fold_through_snakemake_killed_after_epoch_1_resumes(tiny_run, tmp_path):
    workdir = tmp_path.resolve()
    # tiny_run's data, cache and folds (DDP_CONFIG changes only the model and training): the run starts at training
    copy_of_run(tiny_run[0], workdir, from_stage="train")
    write_config(workdir, DDP_CONFIG)
    results = workdir / "results"
    state, log = results / "state/train_fold0/last.pt", results / "logs/train_fold0.log"
    running = []

    def first_epoch_saved():
        if state.exists():
            running.extend(processes_in(workdir))
            return True
        return False

    assert run_until(workdir, first_epoch_saved, extra=FOLD0), "the fold finished before it could be killed"
    killed_log = log.read_text()
    resumed_from = torch.load(state, weights_only=True)["epoch"]
    assert len(running) >= 5, running  # snakemake, the shell, tee, the launcher, 2 ranks
    assert wait_until_gone(workdir) == [], "processes of the killed job are still running"
    assert resumed_from == 1 and not (results / "models/fold0/best.pt").exists()
    assert killed_log.count("fold 0 epoch 1: train_loss") == 1 and "saved" not in killed_log

    snakemake(workdir, "--unlock")
    proc = snakemake(workdir, *FOLD0)
    out = proc.stdout + proc.stderr
    assert "threads: 2" in out and "gpu=2" in out  # the rule asks for train.devices GPUs
    text = log.read_text()
    for line in ["fold 0: resuming after epoch 1 from", "fold 0: DistributedDataParallel over 2 processes (cpu, gloo), "
                 "each 4 images of every batch of 8, 1 CPU threads each", "fold 0 epoch 2: train_loss",
                 "fold 0 epoch 3: train_loss", "fold 0: saved best.pt", "fold 0: best epoch"]:
        assert text.count(line) == 1, (line, text[-3000:])  # rank 0 alone logs
    assert "fold 0 epoch 1: train_loss" not in text

    out_dir = results / "models/fold0"
    images, index = open_cache(results / "cache/train")
    folds = pd.read_csv(results / "folds.csv")
    metrics = check_fold_outputs(out_dir, folds, 0, epochs=3, image_size=32, model_name="efficientnet_lite0")
    check_checkpoint_reproduces_oof(out_dir, images, index)  # rank 0 got every held-out score, each with its image
    # only rank 0 wrote, only the outputs; the resume state is gone
    assert sorted(p.name for p in out_dir.iterdir()) == ["best.pt", "history.csv", "metrics.json", "oof.csv"]
    assert list(state.parent.iterdir()) == [] and not list(results.rglob(".tmp-*"))
    history = pd.read_csv(out_dir / "history.csv")
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]
    # the global batch: as many images and optimisation steps per epoch as one process takes
    steps = int((folds["fold"] != 0).sum()) // 8
    assert round(metrics["images_per_s"] * metrics["train_seconds"]) == 3 * steps * 8
    lr = cosine_with_warmup(3 * steps, round(0.5 * steps))
    np.testing.assert_allclose(history["lr"], [3.0e-3 * lr(epoch * steps - 1) for epoch in (1, 2, 3)])
