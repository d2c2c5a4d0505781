#!/usr/bin/env python3
"""Stage report: metrics.json, headline.json (the few numbers DVC shows), plots, provenance.json
and one self-contained HTML report on the validation data. The rule passes the whole config:
provenance.json records its sha256."""
import argparse
import os
from pathlib import Path

import pandas as pd

from deepfake_workflow.atomic import atomic_path
from deepfake_workflow.cache import open_cache
from deepfake_workflow.cli import add_config_args, config_from_args, run_main
from deepfake_workflow.labels import read_labels
from deepfake_workflow.layout import Manifest
from deepfake_workflow.metrics import combine_fold_predictions
from deepfake_workflow.provenance import collect
from deepfake_workflow.report import build_report
from deepfake_workflow.submission import fold_scores, folds_used, read_fold_metrics

REPORT_FILES = ("metrics.json", "headline.json", "report.html", "metrics_table.csv", "provenance.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_config_args(parser)
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--histories", nargs="+", required=True)
    parser.add_argument("--fold-metrics", nargs="+", required=True)
    parser.add_argument("--oof", nargs="+", required=True)
    parser.add_argument("--val-predictions", nargs="+", required=True)
    parser.add_argument("--val-cache", type=Path, required=True)
    parser.add_argument("--out-dir", type=Path, required=True)
    args = parser.parse_args()
    config = config_from_args(args)
    manifest = Manifest.read(args.manifest)

    fold_metrics = read_fold_metrics(args.fold_metrics)
    folds = list(fold_metrics)
    histories = {f: pd.read_csv(p) for f, p in zip(folds, args.histories, strict=True)}
    val_frames = {f: pd.read_csv(p) for f, p in zip(folds, args.val_predictions, strict=True)}
    strategy = config["submit"]["strategy"]
    used = folds_used(strategy, fold_scores(fold_metrics))
    val_pred = combine_fold_predictions(val_frames, used)
    first = fold_metrics[folds[0]]
    n_params = int(first.get("n_params", 0))
    submission_info = {"strategy": strategy, "folds_used": used, "n_models": len(used),
                       "n_params_total": n_params * len(used), "model": first.get("model_name")}

    methods = pd.read_csv(manifest.methods_file) if manifest.methods_file else None
    val_images, val_index = open_cache(args.val_cache)
    plots_dir = args.out_dir / "plots"
    with atomic_path(plots_dir, is_dir=True) as tmp:
        metrics = build_report(
            histories=histories, fold_metrics=fold_metrics,
            oof=pd.concat([pd.read_csv(p) for p in args.oof], ignore_index=True),
            val_pred=val_pred, val_labels=read_labels(manifest.split("val").labels), methods=methods,
            val_images=val_images, val_index=val_index, report_cfg=config["report"],
            submission_info=submission_info, out_dir=tmp, data_info=manifest.summary(),
            provenance=collect(config=config, manifest=args.manifest))
        for name in REPORT_FILES:  # the rest of tmp (the PNGs) becomes plots/
            os.replace(tmp / name, args.out_dir / name)
    val = metrics["val"]
    print(manifest.describe())
    print(f"validation split: AUC {val['auc']:.4f}, TPR@FPR=1e-3 {val['tpr_at_fpr_1e-3']:.4f}; "
          f"out-of-fold AUC {metrics['oof']['auc']:.4f} -> {args.out_dir}")


if __name__ == "__main__":
    run_main(main)
