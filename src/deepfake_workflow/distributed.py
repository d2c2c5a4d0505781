"""One fold on several devices: the torchrun processes, their process group and what they share.

With train.devices N > 1, scripts/train.py starts N copies of itself with torchrun (`launch`,
`python -m torch.distributed.run --standalone --nproc_per_node N` run in the launching process).
Each copy joins the process group (`process_group`: NCCL on CUDA, one GPU per process; gloo on
the CPU), takes its share of every batch of the seeded batch plan (training.rank_keys) and trains
a DistributedDataParallel model, which averages the gradients: the N processes take the steps one
process would take with the same global batch. Held-out scores are gathered on rank 0, which
alone computes the metrics, writes files and logs progress.
"""
from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from .errors import ConfigError

logger = logging.getLogger(__name__)

TORCHRUN_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE")  # set by torchrun in every process it starts
LAUNCHER_ENV = "DEEPFAKE_WORKFLOW_LAUNCHER_PID"
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclass(frozen=True)
class Ranks:
    """This process's rank among `world` processes training one fold (one process: 0 of 1)."""
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def current() -> Ranks:
    """The rank and size of the process group this process has joined (none: 0 of 1)."""
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size())
    return Ranks()


def started_by_torchrun(env: dict | None = None) -> bool:
    env = os.environ if env is None else env
    return all(key in env for key in TORCHRUN_ENV)


def threads_per_process(threads: int | None, world: int) -> int | None:
    """CPU threads for each of `world` processes sharing `threads` (None: all cores when split)."""
    if world <= 1:
        return threads
    return max(1, (threads or os.cpu_count() or 1) // world)


def launch(script: str | os.PathLike, args: Sequence[str], *, nproc: int, threads: int | None) -> int:
    """Run `script args` in `nproc` processes with torchrun on this machine (a free local port) and
    wait; returns the exit code. This process is torchrun's agent: it keeps the GPU locks its caller
    holds, and the processes it starts inherit CUDA_VISIBLE_DEVICES and split `threads`."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    os.environ["OMP_NUM_THREADS"] = str(threads_per_process(threads, nproc))  # else torchrun sets 1
    os.environ[LAUNCHER_ENV] = str(os.getpid())
    try:
        torchrun(["--standalone", "--nproc_per_node", str(nproc), str(Path(script)), *args])
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        print(f"error: process {rank} of the {nproc} training this fold failed (exit code {failure.exitcode}); "
              f"its message is above", file=sys.stderr)
        return 2
    except SignalException as exc:  # SIGTERM/SIGINT: torchrun stopped the processes first
        print(f"interrupted ({signal.Signals(exc.sigval).name})", file=sys.stderr)
        return 128 + int(exc.sigval)
    return 0


def _die_with_launcher() -> None:
    """A killed job must leave no process training (and later writing outputs) on its own: torchrun
    starts each process in a session of its own, out of reach of a kill of the job's process group,
    so ask Linux to SIGKILL this process when its parent (the launcher) dies."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: no such guard
        return
    launcher = os.environ.get(LAUNCHER_ENV)
    if launcher is not None and os.getppid() != int(launcher):  # it died before prctl
        os._exit(1)


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[Ranks]:
    """Join the process group of the processes torchrun started (outside torchrun: nothing, 0 of 1).

    NCCL on CUDA, with GPU LOCAL_RANK of the visible ones as this process's device; gloo on the
    CPU. Ranks other than 0 log warnings only (rank 0 reports progress for all).
    """
    if not started_by_torchrun():
        yield Ranks()
        return
    _die_with_launcher()
    local, world = int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"])
    if device.type == "cuda":
        visible = torch.cuda.device_count()
        if visible < world:
            raise ConfigError(f"train.devices: {world} processes but {visible} CUDA GPU(s) visible "
                              f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}); with SLURM or "
                              f"Snakemake ask for as many GPUs (--resources gpu=N)")
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    ranks = current()
    package_logger = logging.getLogger(__package__)
    level = package_logger.level
    if not ranks.main:
        package_logger.setLevel(logging.WARNING)
    try:
        yield ranks
    finally:
        package_logger.setLevel(level)
        dist.destroy_process_group()


def data_parallel(model: nn.Module, device: torch.device) -> nn.Module:
    """`model` wrapped in DistributedDataParallel (gradients averaged over the processes, buffers
    from rank 0); in one process the model itself."""
    if current().world == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def share_buffers(module: nn.Module) -> None:
    """Rank 0's buffers (batch-norm statistics) in every process's `module`. DistributedDataParallel
    sends them at the start of each forward pass, so after the last one every process holds the
    statistics of its own share of the batch: a model about to score held-out images (which rank 0
    saves) must first get rank 0's."""
    if current().world > 1:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def all_sum(values: torch.Tensor) -> torch.Tensor:
    """`values` summed over the processes, in place (one process: unchanged)."""
    if current().world > 1:
        dist.all_reduce(values)
    return values


def gather_to_main(obj) -> list | None:
    """Every process's `obj`, in rank order, on rank 0; None on the others."""
    ranks = current()
    if ranks.world == 1:
        return [obj]
    gathered = [None] * ranks.world if ranks.main else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered


def from_main(obj):
    """Rank 0's `obj` on every process (what the others pass is ignored)."""
    if current().world == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
