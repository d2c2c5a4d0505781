"""Device choice, and GPUs per job when several jobs share a multi-GPU box.

Snakemake counts `gpu` resources but does not say which GPU a job should use. A job
takes the first devices whose lock files it can lock exclusively (one, or train.devices for a
fold trained on several GPUs) and restricts itself, and the processes it starts, to them
through CUDA_VISIBLE_DEVICES, which must happen before CUDA is initialised. Cluster executors
(SLURM) set CUDA_VISIBLE_DEVICES themselves; then nothing is done.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import schema_choices
from .errors import ConfigError, WorkflowError

logger = logging.getLogger(__name__)

DEVICE_CHOICES = schema_choices("train.device")


NVIDIA_DRIVER_FILE = Path("/proc/driver/nvidia/version")  # exists where the NVIDIA kernel driver is loaded
TORCH_CUDA_WHEELS = "https://download.pytorch.org/whl/"  # + cu118, cu126, cu130...


@dataclass(frozen=True)
class NvidiaProbe:
    """What the machine says about NVIDIA GPUs, found without torch."""
    visible: bool
    driver: str | None = None  # the driver version, where readable


def probe_nvidia(driver_file: Path = NVIDIA_DRIVER_FILE, nvidia_smi: str = "nvidia-smi") -> NvidiaProbe:
    """An NVIDIA GPU is visible when the kernel driver is loaded (`driver_file`) or `nvidia-smi`
    lists one; the driver version is read from either."""
    try:
        text = Path(driver_file).read_text(errors="replace")
    except OSError:
        pass
    else:
        match = re.search(r"Kernel Module\b.*?\s(\d+\.\d+(?:\.\d+)?)\s", text)
        return NvidiaProbe(True, match.group(1) if match else None)
    try:
        out = subprocess.run([nvidia_smi, "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return NvidiaProbe(False)
    versions = [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []
    return NvidiaProbe(bool(versions), versions[0] if versions else None)


def gpu_unusable_message(key: str, requested: str, probe: NvidiaProbe) -> str:
    """Why `requested` cannot use the visible GPU, and the two ways out."""
    driver = f"driver {probe.driver}" if probe.driver else "driver version not readable"
    build = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
    return (f"{key}: '{requested}', but torch cannot use this machine's NVIDIA GPU ({driver}; torch "
            f"{torch.__version__}, {build}: torch.cuda.is_available() is False), so it would run on the "
            f"CPU without saying so. Install a torch build that the driver supports (README, 'The GPU "
            f"path': pip install torch --index-url {TORCH_CUDA_WHEELS}cuXXX), or set {key}: cpu to use the "
            f"CPU on purpose")


def resolve_device(requested: str, key: str = "train.device", *, cuda_available: bool | None = None,
                   probe: Callable[[], NvidiaProbe] = probe_nvidia,
                   env: Mapping[str, str] | None = None) -> torch.device:
    """'auto' -> cuda if torch can use it, else cpu; 'cuda' without a usable GPU -> ConfigError.

    No silent CPU training on a GPU machine: when an NVIDIA GPU is visible but torch cannot use
    it (a CPU-only build, a build for a newer CUDA than the driver), 'auto' is a ConfigError too,
    naming `key`. A GPU hidden on purpose (CUDA_VISIBLE_DEVICES empty or -1) means the CPU.
    `cuda_available`, `probe` and `env` replace torch's answer, the machine and os.environ (tests).
    """
    if requested not in DEVICE_CHOICES:
        raise ConfigError(f"{key}: expected one of {', '.join(DEVICE_CHOICES)}, got {requested!r}")
    if requested == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available() if cuda_available is None else cuda_available:
        return torch.device("cuda")
    env = os.environ if env is None else env
    visible_devices = env.get("CUDA_VISIBLE_DEVICES")
    hidden = visible_devices is not None and visible_devices.strip() in ("", "-1")
    gpu = NvidiaProbe(False) if hidden else probe()
    if gpu.visible:
        raise ConfigError(gpu_unusable_message(key, requested, gpu))
    if requested == "cuda":
        raise ConfigError(f"{key}: 'cuda' was requested but no CUDA GPU is available "
                          f"(torch {torch.__version__}); use 'auto' or 'cpu'")
    return torch.device("cpu")


def visible_gpu_count() -> int:
    """Number of NVIDIA GPUs, found without initialising CUDA in this process."""
    try:
        count = torch.cuda._device_count_nvml()  # NVML: does not initialise CUDA
        if count >= 0:
            return count
    except Exception:
        pass
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(line.startswith("GPU ") for line in out.stdout.splitlines()) if out.returncode == 0 else 0


GPU_LOCKS_ENV = "DEEPFAKE_WORKFLOW_GPU_LOCKS"


def gpu_lock_dir(env: MutableMapping[str, str] | None = None) -> Path:
    """The folder of GPU lock files: $DEEPFAKE_WORKFLOW_GPU_LOCKS, or one per machine and user.

    Machine-wide, not per project: two runs in two project folders must not take the same GPU.
    Users sharing a machine's GPUs set the variable to a folder they can all write to.
    """
    import tempfile

    env = os.environ if env is None else env
    return Path(env.get(GPU_LOCKS_ENV) or Path(tempfile.gettempdir()) / f"deepfake-workflow-gpu-locks-{os.getuid()}")


def _try_lock(path: Path):
    fh = open(path, "a+")
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        return None
    fh.seek(0)
    fh.truncate()
    fh.write(f"{os.getpid()}\n")
    fh.flush()
    return fh


@contextlib.contextmanager
def acquire_gpus(lock_dir: str | os.PathLike, count: int = 1, *, device_count: int | None = None,
                 timeout_s: float | None = None, poll_s: float = 1.0,
                 env: MutableMapping[str, str] | None = None) -> Iterator[list[int] | None]:
    """Hold exclusive locks on `count` GPUs and set CUDA_VISIBLE_DEVICES to them ("2,3").

    Yields the GPU indices, or None when nothing had to be done (CUDA_VISIBLE_DEVICES already
    set, e.g. by SLURM; no GPU; one GPU wanted on a one-GPU machine). A machine with fewer than
    `count` GPUs is a WorkflowError. Waits while too few GPUs are free, holding none meanwhile (two
    jobs that each hold one of the two GPUs they want would wait forever); after `timeout_s`
    seconds (None = forever) raises WorkflowError. The locks are released (and the variable
    restored) on exit; a killed process releases them too. `device_count` overrides GPU discovery
    (tests, unusual setups).
    """
    env = os.environ if env is None else env
    if env.get("CUDA_VISIBLE_DEVICES") is not None:
        yield None
        return
    total = visible_gpu_count() if device_count is None else device_count
    if total == 0 or (total == 1 and count == 1):
        yield None
        return
    if total < count:
        raise WorkflowError(f"train.devices: {count} GPUs wanted for one fold but this machine has {total}")
    if torch.cuda.is_initialized():
        logger.warning("CUDA is already initialised; CUDA_VISIBLE_DEVICES set now has no effect")
    lock_dir = Path(lock_dir)
    lock_dir.mkdir(parents=True, exist_ok=True)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    announced = False
    while True:
        held = {}
        for index in range(total):
            handle = _try_lock(lock_dir / f"gpu{index}.lock")
            if handle is not None:
                held[index] = handle
                if len(held) == count:
                    break
        if len(held) == count:
            break
        _release(held.values())
        if deadline is not None and time.monotonic() >= deadline:
            raise WorkflowError(f"no free GPU: fewer than {count} of the {total} lock files in {lock_dir} "
                                f"are free (held by other jobs) after {timeout_s:g} s")
        if not announced:
            logger.info("waiting for %d free GPU(s) of %d (locks in %s)", count, total, lock_dir)
            announced = True
        time.sleep(poll_s)
    env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, held))
    try:
        yield list(held)
    finally:
        env.pop("CUDA_VISIBLE_DEVICES", None)
        _release(held.values())


def _release(handles) -> None:
    for handle in handles:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        handle.close()


@contextlib.contextmanager
def acquire_gpu(lock_dir: str | os.PathLike, **kwargs) -> Iterator[int | None]:
    """acquire_gpus for one GPU: yields its index, or None when nothing had to be done."""
    with acquire_gpus(lock_dir, 1, **kwargs) as indices:
        yield None if indices is None else indices[0]
