#!/usr/bin/env python3
"""Stage make_folds: stratified, seeded K folds over the training labels -> folds.csv."""
import argparse

from deepfake_workflow.atomic import write_csv
from deepfake_workflow.cli import add_config_args, config_from_args, run_main
from deepfake_workflow.folds import make_folds
from deepfake_workflow.labels import read_labels
from deepfake_workflow.layout import SplitManifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_config_args(parser)
    parser.add_argument("--split-manifest", required=True, help="the train split's manifest from fetch_data")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    config = config_from_args(args)
    labels = read_labels(SplitManifest.read(args.split_manifest).labels)
    folds = make_folds(labels, k=config["folds"]["k"], seed=config["seed"])
    write_csv(folds, args.out)
    summary = folds.groupby("fold")["target"].agg(["size", "mean"])
    for fold, row in summary.iterrows():
        print(f"fold {fold}: {int(row['size'])} images, {row['mean']:.1%} fake")


if __name__ == "__main__":
    run_main(main)
