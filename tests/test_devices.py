"""Device resolution and the one-GPU-per-job lock (exercised with plain processes)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from deepfake_workflow.devices import (
    GPU_LOCKS_ENV,
    NvidiaProbe,
    acquire_gpu,
    acquire_gpus,
    gpu_lock_dir,
    probe_nvidia,
    resolve_device,
)
from deepfake_workflow.errors import ConfigError, WorkflowError

# Child: take a GPU out of `count`, report it, hold it until `release` exists.
CHILD = """
import os, sys, time
from pathlib import Path
from deepfake_workflow.devices import acquire_gpu, gpu_lock_dir
lock_dir, report, release, timeout = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), float(sys.argv[4])
lock_dir = gpu_lock_dir() if lock_dir == "default" else lock_dir  # what a stage uses without --gpu-locks
with acquire_gpu(lock_dir, device_count=2, timeout_s=timeout, poll_s=0.1) as gpu:
    # write then rename: the test polls for the file and must never read it half-written
    tmp = report.with_suffix(".part")
    tmp.write_text(f"{gpu} {os.environ['CUDA_VISIBLE_DEVICES']}")
    os.replace(tmp, report)
    while not release.exists():
        time.sleep(0.05)
"""


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="train.device"):
        resolve_device("gpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_without_gpu_names_the_key():
    with pytest.raises(ConfigError, match="predict.device"):
        resolve_device("cuda", key="predict.device")


GPU = NvidiaProbe(True, "535.104.05")


def no_gpu() -> NvidiaProbe:
    return NvidiaProbe(False)


def test_gpu_visible_but_unusable_by_torch_is_an_error_not_cpu_training():
    for requested, key in (("auto", "train.device"), ("cuda", "predict.device")):
        with pytest.raises(ConfigError) as err:
            resolve_device(requested, key, cuda_available=False, probe=lambda: GPU, env={})
        message = str(err.value)
        assert message.startswith(f"{key}: '{requested}', but torch cannot use this machine's NVIDIA GPU")
        assert "driver 535.104.05" in message and f"torch {torch.__version__}" in message
        assert (f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only build") in message
        assert "download.pytorch.org/whl/cu" in message and f"set {key}: cpu" in message


def test_cpu_on_purpose_proceeds_on_a_gpu_machine():
    def must_not_probe():
        raise AssertionError("device: cpu needs no probe")
    assert resolve_device("cpu", cuda_available=False, probe=must_not_probe, env={}) == torch.device("cpu")
    # a GPU hidden on purpose from this process counts as no GPU
    for hidden in ("", "-1"):
        assert resolve_device("auto", cuda_available=False, probe=lambda: GPU,
                              env={"CUDA_VISIBLE_DEVICES": hidden}) == torch.device("cpu")
    assert resolve_device("auto", cuda_available=False, probe=no_gpu, env={}) == torch.device("cpu")
    assert resolve_device("auto", cuda_available=True, probe=lambda: GPU, env={}) == torch.device("cuda")


def test_probe_reads_the_driver_file_or_nvidia_smi(tmp_path):
    proprietary = tmp_path / "version"
    proprietary.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC 2023\n"
                           "GCC version:  gcc version 12.2.0\n")
    assert probe_nvidia(proprietary, nvidia_smi=str(tmp_path / "absent")) == NvidiaProbe(True, "535.104.05")
    open_module = tmp_path / "open"
    open_module.write_text("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.65.06  Release Build\n")
    assert probe_nvidia(open_module, nvidia_smi=str(tmp_path / "absent")) == NvidiaProbe(True, "580.65.06")
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 570.86.15\necho 570.86.15\n")
    smi.chmod(0o755)
    assert probe_nvidia(tmp_path / "absent", nvidia_smi=str(smi)) == NvidiaProbe(True, "570.86.15")
    assert probe_nvidia(tmp_path / "absent", nvidia_smi=str(tmp_path / "absent")) == NvidiaProbe(False)


def test_lock_does_nothing_when_visible_devices_set_or_single_gpu(tmp_path):
    env = {"CUDA_VISIBLE_DEVICES": "3"}
    with acquire_gpu(tmp_path, device_count=4, env=env) as gpu:
        assert gpu is None and env == {"CUDA_VISIBLE_DEVICES": "3"}
    env = {}
    for count in (0, 1):
        with acquire_gpu(tmp_path / "locks", device_count=count, env=env) as gpu:
            assert gpu is None and env == {}
    assert not (tmp_path / "locks").exists()


def test_lock_sets_and_restores_visible_devices(tmp_path):
    env = {}
    with acquire_gpu(tmp_path, device_count=2, env=env) as gpu:
        assert gpu == 0 and env["CUDA_VISIBLE_DEVICES"] == "0"
    assert "CUDA_VISIBLE_DEVICES" not in env


def test_a_fold_on_several_gpus_takes_that_many_locks(tmp_path):
    """train.devices N: N distinct GPUs in CUDA_VISIBLE_DEVICES for the launcher and the processes it
    starts; a job that cannot get all it wants holds none while it waits."""
    ddp, other, single = {}, {}, {}
    with acquire_gpus(tmp_path, 2, device_count=3, env=ddp) as gpus:
        assert gpus == [0, 1] and ddp["CUDA_VISIBLE_DEVICES"] == "0,1"
        with pytest.raises(WorkflowError, match="no free GPU: fewer than 2 of the 3 lock files"):
            with acquire_gpus(tmp_path, 2, device_count=3, env=other, timeout_s=0.2, poll_s=0.05):
                pass
        with acquire_gpu(tmp_path, device_count=3, env=single) as gpu:  # the third GPU was left free
            assert gpu == 2 and single["CUDA_VISIBLE_DEVICES"] == "2"
    assert ddp == {} and other == {}
    with acquire_gpus(tmp_path, 3, device_count=3, env=ddp) as gpus:
        assert gpus == [0, 1, 2]
    with pytest.raises(WorkflowError, match="train.devices: 4 GPUs wanted for one fold but this machine has 3"):
        with acquire_gpus(tmp_path, 4, device_count=3, env={}):
            pass
    # the cluster chose the GPUs, or there are none (CPU processes): nothing to lock
    for env, count in (({"CUDA_VISIBLE_DEVICES": "0,1"}, 3), ({}, 0)):
        with acquire_gpus(tmp_path / "none", 2, device_count=count, env=env) as gpus:
            assert gpus is None
    assert not (tmp_path / "none").exists()


def _start(tmp_path: Path, name: str, timeout: float, lock_dir: str | None = None,
           cwd: Path | None = None) -> tuple[subprocess.Popen, Path]:
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", GPU_LOCKS_ENV)}
    report = tmp_path / f"{name}.txt"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, lock_dir or str(tmp_path / "locks"), str(report),
                             str(tmp_path / "release"), str(timeout)],
                            env=env, stderr=subprocess.PIPE, text=True, cwd=cwd)
    return proc, report


def _wait_for(path: Path, proc: subprocess.Popen, limit: float = 60) -> str:
    deadline = time.monotonic() + limit
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)
    return path.read_text()


def test_concurrent_processes_get_different_gpus(tmp_path):
    first, first_report = _start(tmp_path, "first", timeout=30)
    second, second_report = _start(tmp_path, "second", timeout=30)
    try:
        got = {_wait_for(first_report, first), _wait_for(second_report, second)}
        assert got == {"0 0", "1 1"}
        # both GPUs held: a third job times out with a clear error
        third, third_report = _start(tmp_path, "third", timeout=0.5)
        assert third.wait(timeout=60) != 0
        assert "no free GPU" in third.stderr.read() and not third_report.exists()
    finally:
        (tmp_path / "release").touch()
        for proc in (first, second):
            proc.wait(timeout=60)
    # released on exit: the next job gets GPU 0 again
    (tmp_path / "release").unlink()
    fourth, fourth_report = _start(tmp_path, "fourth", timeout=5)
    try:
        assert _wait_for(fourth_report, fourth) == "0 0"
    finally:
        (tmp_path / "release").touch()
        fourth.wait(timeout=60)
    assert fourth.returncode == 0


def test_lock_released_when_holder_is_killed(tmp_path):
    holder, report = _start(tmp_path, "holder", timeout=5)
    _wait_for(report, holder)
    holder.kill()
    holder.wait(timeout=60)
    env = {}
    with acquire_gpu(tmp_path / "locks", device_count=2, env=env, timeout_s=5) as gpu:
        assert gpu == 0


def test_runs_in_two_project_folders_never_take_the_same_gpu(tmp_path):
    """The stages' default lock folder is one per machine and user, not one per project: two jobs
    started from two project folders get different GPUs."""
    assert gpu_lock_dir({}).is_absolute() and gpu_lock_dir({}) == gpu_lock_dir({"PWD": "/elsewhere"})
    assert gpu_lock_dir({GPU_LOCKS_ENV: str(tmp_path / "shared")}) == tmp_path / "shared"
    projects = [tmp_path / "project_a", tmp_path / "project_b"]
    procs = []
    try:
        for project in projects:
            project.mkdir()
            procs.append(_start(tmp_path, project.name, timeout=30, lock_dir="default", cwd=project))
        got = {_wait_for(report, proc) for proc, report in procs}
        assert got == {"0 0", "1 1"}
    finally:
        (tmp_path / "release").touch()
        for proc, _ in procs:
            proc.wait(timeout=60)
