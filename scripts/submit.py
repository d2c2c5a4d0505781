#!/usr/bin/env python3
"""Stage submit: combine the fold models' test predictions into a validated submission.csv."""
import argparse

import pandas as pd

from deepfake_workflow.cli import add_config_args, config_from_args, run_main
from deepfake_workflow.labels import read_labels
from deepfake_workflow.layout import SplitManifest
from deepfake_workflow.metrics import combine_fold_predictions
from deepfake_workflow.submission import fold_scores, folds_used, read_fold_metrics, write_submission


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_config_args(parser)
    parser.add_argument("--split-manifest", required=True,
                        help="manifest of the split the submission scores (phase-2 test, or val)")
    parser.add_argument("--predictions", nargs="+", required=True, help="per-fold test predictions, in fold order")
    parser.add_argument("--fold-metrics", nargs="+", required=True, help="per-fold metrics.json, in fold order")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    config = config_from_args(args)
    fold_metrics = read_fold_metrics(args.fold_metrics)
    frames = {fold: pd.read_csv(p) for fold, p in zip(fold_metrics, args.predictions, strict=True)}
    used = folds_used(config["submit"]["strategy"], fold_scores(fold_metrics))
    sub = combine_fold_predictions(frames, used)
    test_list = read_labels(SplitManifest.read(args.split_manifest).labels, require_target=False)
    write_submission(sub, test_list["img_name"], args.out)
    print(f"submission: {len(sub)} rows ({config['submit']['strategy']}, folds {used}) -> {args.out}")


if __name__ == "__main__":
    run_main(main)
