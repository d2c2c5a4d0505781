"""Killed jobs: `kill -9` mid-way, re-run, and the results equal those of an uninterrupted run."""
import os
import signal
import subprocess
import time

import pandas as pd
from conftest import BIN, REPO, TINY_CONFIG, snakemake, write_config


def run_until(workdir, condition, timeout=300):
    """Start snakemake in its own process group; SIGKILL the whole group once condition() holds."""
    if not (workdir / "scripts").exists():
        (workdir / "scripts").symlink_to(REPO / "scripts")
    cmd = [str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--configfile",
           str(workdir / "config.yaml"), "--cores", "4", "--resources", "gpu=1", "--workflow-profile", "none"]
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env, start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if condition():
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return True
            if proc.poll() is not None:
                return False
            time.sleep(0.05)
        raise AssertionError("condition never held")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def finish(workdir):
    # A SIGKILLed snakemake leaves its lock behind: --unlock, then re-run (the profile's
    # --rerun-incomplete is passed by the conftest helper).
    snakemake(workdir, "--unlock")
    return snakemake(workdir)


def assert_same_results(workdir, reference):
    """Byte-identical folds, submission and metrics.json (determinism on the CPU)."""
    for rel in ["results/submission.csv", "results/folds.csv", "results/reports/metrics.json"]:
        assert (workdir / rel).read_bytes() == (reference / rel).read_bytes(), rel
    assert not list((workdir / "results").rglob(".tmp-*"))


def test_kill_mid_training_resumes_and_matches_uninterrupted_run(tiny_run, tmp_path):
    write_config(tmp_path, TINY_CONFIG)
    state = tmp_path / "results/state/train_fold0/last.pt"
    assert run_until(tmp_path, state.exists), "workflow finished before training started"
    assert not (tmp_path / "results/submission.csv").exists()
    finish(tmp_path)
    log = (tmp_path / "results/logs/train_fold0.log").read_text()
    assert "resum" in log.lower(), log[-2000:]
    history = pd.read_csv(tmp_path / "results/models/fold0/history.csv")
    assert history["epoch"].tolist() == list(range(1, TINY_CONFIG["train"]["epochs"] + 1)) or \
        history["epoch"].tolist() == list(range(TINY_CONFIG["train"]["epochs"]))
    assert_same_results(tmp_path, tiny_run[0])


def test_kill_during_cache_build_leaves_nothing_that_looks_finished(tiny_run, tmp_path):
    write_config(tmp_path, TINY_CONFIG)
    cache = tmp_path / "results/cache"

    def building():
        return cache.is_dir() and any(p.name.startswith(".tmp-") for p in cache.iterdir())

    assert run_until(tmp_path, building), "workflow finished before the cache build started"
    for split in ("train", "val", "test"):
        # either absent or complete: never a half-written images.npy under the final name
        # (Snakemake itself creates the empty output folder before the job starts)
        if (cache / split / "images.npy").exists():
            assert (cache / split / "cache_info.json").exists()
    finish(tmp_path)
    assert_same_results(tmp_path, tiny_run[0])
