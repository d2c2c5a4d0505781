#!/usr/bin/env python3
"""Score any images with a trained model: image paths (files, folders, or a list file) in,
fake probability out, as CSV img_name,y_pred (the competition's final-phase test API).

    python scripts/score_images.py --checkpoint results/models/fold0/best.pt photos/ -o scores.csv
    python scripts/score_images.py -c results/models/fold0/best.pt -c results/models/fold1/best.pt a.jpg b.png
"""
import argparse
from pathlib import Path

from deepfake_workflow.cli import run_main
from deepfake_workflow.config import schema_choices
from deepfake_workflow.scoring import collect_image_paths, score_paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", type=Path, help="image files, folders, or .txt/.csv lists of paths")
    parser.add_argument("-c", "--checkpoint", required=True, type=Path, action="append",
                        help="a best.pt file; repeat to average several (an ensemble)")
    parser.add_argument("-o", "--out", type=Path, default=None, help="CSV to write (default: print)")
    parser.add_argument("--size", type=int, default=None,
                        help="cache size the model was trained at (default: from checkpoint)")
    parser.add_argument("--resize", default=None, help="resize mode (default: from checkpoint or squash)")
    parser.add_argument("--tta", choices=schema_choices("predict.tta"), default="none")
    parser.add_argument("--device", choices=schema_choices("train.device"), default="auto")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    paths = collect_image_paths(args.inputs)
    scores = score_paths(paths, args.checkpoint, size=args.size, resize=args.resize, tta=args.tta,
                         device=args.device, batch_size=args.batch_size)
    if args.out:
        from deepfake_workflow.atomic import write_csv

        write_csv(scores, args.out, float_format="%.6f")
        print(f"{len(scores)} images scored -> {args.out}")
    else:
        print(scores.to_csv(index=False, float_format="%.6f"), end="")


if __name__ == "__main__":
    run_main(main)
