#!/usr/bin/env python3
"""Stage predict: one fold model scores one cached split -> img_name,y_pred."""
import argparse
from pathlib import Path

import pandas as pd

from deepfake_workflow.atomic import write_csv
from deepfake_workflow.cache import open_cache, read_cache_info
from deepfake_workflow.cli import add_compute_args, add_config_args, config_from_args, gpu_slot, run_main, set_threads
from deepfake_workflow.crops import picture_boxes, picture_shifts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_config_args(parser)
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--cache-dir", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    add_compute_args(parser)
    args = parser.parse_args()
    config = config_from_args(args)
    set_threads(args.threads)
    images, index = open_cache(args.cache_dir)
    resize = read_cache_info(args.cache_dir)["resize"]
    boxes = picture_boxes(index, images.shape[1], resize)
    shifts = picture_shifts(index, images.shape[1], resize)
    with gpu_slot(args.gpu_locks, config["train"]["device"]):
        from deepfake_workflow.checkpoint import load_checkpoint
        from deepfake_workflow.inference import predict_images

        model, meta = load_checkpoint(args.checkpoint)
        probs = predict_images(model, meta, images, batch_size=config["predict"]["batch_size"],
                               tta=config["predict"]["tta"], device=config["train"]["device"],
                               progress=not args.no_progress, boxes=boxes, crops=config["predict"]["crops"],
                               shifts=shifts)
    write_csv(pd.DataFrame({"img_name": index["img_name"], "y_pred": probs}), args.out)
    print(f"{len(probs)} predictions -> {args.out}")


if __name__ == "__main__":
    run_main(main)
