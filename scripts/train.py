#!/usr/bin/env python3
"""Stage train: fit one fold's model on the cached training images; resumable after a kill.

With train.devices N > 1 this process takes N GPUs (lock files, unless the cluster chose them) and
starts N copies of itself with torchrun, which train the fold together (DistributedDataParallel).
"""
import argparse
import contextlib
import sys
from pathlib import Path

import pandas as pd

from deepfake_workflow import distributed
from deepfake_workflow.cache import open_cache, read_cache_info
from deepfake_workflow.cli import add_compute_args, add_config_args, config_from_args, gpu_slot, run_main, set_threads
from deepfake_workflow.devices import resolve_device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_config_args(parser)
    parser.add_argument("--cache-dir", required=True, type=Path)
    parser.add_argument("--folds", required=True)
    parser.add_argument("--fold", required=True, type=int)
    parser.add_argument("--out-dir", required=True, type=Path)
    parser.add_argument("--state-dir", required=True, type=Path, help="resume checkpoint (kept across kills)")
    add_compute_args(parser)
    args = parser.parse_args()
    config = config_from_args(args)
    device, devices = config["train"]["device"], config["train"]["devices"]
    worker = distributed.started_by_torchrun()
    if devices > 1 and not worker:
        with gpu_slot(args.gpu_locks, device, count=devices):
            resolve_device(device)  # a device error once, before the processes start
            sys.exit(distributed.launch(__file__, sys.argv[1:], nproc=devices, threads=args.threads))
    set_threads(distributed.threads_per_process(args.threads, devices))
    images, index = open_cache(args.cache_dir)
    folds = pd.read_csv(args.folds)
    # a torchrun process uses the GPUs its launcher took
    with contextlib.nullcontext() if worker else gpu_slot(args.gpu_locks, device), \
            distributed.process_group(resolve_device(device)) as ranks:
        from deepfake_workflow.training import train_fold

        result = train_fold(images=images, index=index, folds=folds, fold=args.fold,
                            model_cfg=config["model"], train_cfg=config["train"], seed=config["seed"],
                            out_dir=args.out_dir, state_dir=args.state_dir, progress=not args.no_progress,
                            resize=read_cache_info(args.cache_dir)["resize"])
    if ranks.main:
        print(f"fold {args.fold}: best epoch {result['best_epoch']}, val AUC {result['best_val_auc']:.4f}")


if __name__ == "__main__":
    run_main(main)
