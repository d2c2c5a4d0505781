"""Shared helpers: run the real Snakemake workflow in a temporary working directory."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# A config small enough for the test suite: tiny demo, tiny timm test model, 2 folds.
TINY_CONFIG = {
    "seed": 3,
    "data": {"source": "demo", "demo": {"n_train": 60, "n_val": 40, "n_test": 30, "min_size": 96, "max_size": 160}},
    "cache": {"size": 32},
    "folds": {"k": 2},
    "model": {"name": "test_efficientnet", "pretrained": False},
    "train": {"epochs": 2, "batch_size": 16, "lr": 3.0e-3, "device": "cpu"},
    "report": {"gallery_size": 4},
}


LOCAL_COPY_SIZES = {"n_train": 30, "n_val": 20, "n_test": 15, "min_size": 80, "max_size": 120}


def write_config(workdir: Path, config: dict) -> Path:
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def snakemake_command(workdir: Path, *args: str, configfile: bool = True, cores: int = 4,
                      gpus: int = 1) -> tuple[list[str], dict]:
    """The snakemake command line and environment the tests run the workflow with, in `workdir`.

    --cores 4 gives the rules the same thread counts as the commands in dvc.yaml, so both
    engines compute bit-identical results. `configfile=False` leaves `workdir/config.yaml` to the
    Snakefile's `configfile:` directive, as a user's plain `snakemake` does (Snakemake then hands
    `--config` values over before the file's sections). `cores`, `gpus`: `--cores`, `--resources gpu=`.
    """
    extra = ["--configfile", str(workdir / "config.yaml")] if configfile else []
    cmd = [str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "-d", str(workdir),
           *extra, "--cores", str(cores), "--resources", f"gpu={gpus}",
           "--workflow-profile", "none", "--rerun-incomplete", "--show-failed-logs", *args]
    # The rules run `python scripts/<stage>.py` from the working directory, as dvc.yaml does.
    if not (workdir / "scripts").exists():
        (workdir / "scripts").symlink_to(REPO / "scripts")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return cmd, env


def snakemake(workdir: Path, *args: str, check: bool = True, timeout: int = 900,
              configfile: bool = True) -> subprocess.CompletedProcess:
    """Run the real snakemake CLI on the repo's Snakefile inside `workdir` (see snakemake_command)."""
    cmd, env = snakemake_command(workdir, *args, configfile=configfile)
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc


def jobs_run(proc: subprocess.CompletedProcess) -> list[str]:
    """Names of the rules a snakemake run executed (from its log lines 'rule NAME:' / 'localrule NAME:')."""
    out = proc.stdout + proc.stderr
    names = []
    for line in out.splitlines():
        line = line.strip()
        for prefix in ("rule ", "localrule "):
            if line.startswith(prefix) and line.endswith(":"):
                names.append(line[len(prefix):-1])
    return names


@pytest.fixture(scope="session")
def local_copy(tmp_path_factory):
    """A small data set in the Multi-FFDI layout, as a user's local copy (made with the demo
    generator: real-layout names, label files, phase2 test list)."""
    from deepfake_workflow.demo import write_demo_dataset

    root = tmp_path_factory.mktemp("multiFFDI") / "copy"
    write_demo_dataset(root, seed=11, **LOCAL_COPY_SIZES)
    return root


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One full workflow run on the tiny config, shared by the end-to-end tests that only read it."""
    workdir = tmp_path_factory.mktemp("tiny_run")
    write_config(workdir, TINY_CONFIG)
    proc = snakemake(workdir)
    return workdir, proc


# What each stage of the workflow leaves under results/ (outputs, logs, benchmarks, resume state),
# in pipeline order: `copy_of_run(..., from_stage=S)` removes S's and every later stage's.
STAGE_FILES = {
    "build_cache": ["cache", "logs/build_cache_*", "benchmarks/build_cache_*"],
    "make_folds": ["folds.csv", "logs/make_folds*", "benchmarks/make_folds*"],
    "train": ["models", "state", "logs/train_*", "benchmarks/train_*"],
    "predict": ["predictions", "logs/predict_*", "benchmarks/predict_*"],
    "report": ["reports", "logs/report*", "benchmarks/report*"],
    "submit": ["submission.csv", "logs/submit*", "benchmarks/submit*"],
}


def copy_of_run(run: Path, dest: Path, from_stage: str) -> Path:
    """A copy of a finished run (`cp -a`: times kept, so Snakemake sees its files as up to date)
    without what `from_stage` and the stages after it wrote: a run in `dest` starts at that stage,
    as the first run in a fresh folder reaches it, without redoing the stages before it."""
    import shutil

    subprocess.run(["cp", "-a", f"{run}/.", str(dest)], check=True)
    stages = list(STAGE_FILES)
    for stage in stages[stages.index(from_stage):]:
        for pattern in STAGE_FILES[stage]:
            for path in (dest / "results").glob(pattern):
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    return dest
