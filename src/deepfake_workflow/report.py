"""Validation report: metrics.json, headline.json, metrics_table.csv, PNG plots, provenance.json
and one self-contained report.html (images embedded as base64, inline CSS, no external links).

The decision threshold is chosen on out-of-fold predictions and only then applied to the
official validation split, so `acc_at_threshold` on val is an honest estimate.
"""
from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from . import __version__
from .atomic import write_csv, write_json, write_text
from .config import section_defaults, validate_section
from .errors import DataError
from .metrics import MetricInputError, auc_by_method, binary_metrics, choose_threshold
from .tables import require_columns

DEFAULTS: dict = section_defaults("report")  # from the config schema

METRIC_KEYS = ("n", "n_fake", "n_real", "auc", "tpr_at_fpr_1e-3", "ap", "eer", "log_loss",
               "acc_at_0.5", "acc_at_threshold")
TRAINING_KEYS = ("best_epoch", "best_val_auc", "train_seconds", "images_per_s")

# file name -> (title, one sentence on what the plot shows and how to read it); also
# usable as Snakemake report() captions
PLOT_EXPLANATIONS: dict[str, tuple[str, str]] = {
    "roc.png": ("ROC curves",
                "True positive rate (fakes caught) against false positive rate (reals flagged) "
                "for every threshold, one thin line per fold's out-of-fold predictions and a thick "
                "black line for the validation split; higher and further left is better, and the "
                "dashed line marks FPR = 1e-3, the competition's tie-break point."),
    "training_curves.png": ("Training curves",
                            "Loss, validation AUC and learning rate per epoch, one colour per fold; "
                            "a validation loss that rises while training loss falls means "
                            "over-fitting, and folds that disagree a lot mean an unstable setup."),
    "score_histogram.png": ("Score histogram (validation)",
                            "How the predicted fake-probability is distributed for real (blue) and "
                            "fake (orange) validation images on a log count axis; the less the two "
                            "overlap the better, and mass on the wrong side of the dashed threshold "
                            "is error."),
    "confusion_matrix.png": ("Confusion matrix (validation)",
                             "Counts of validation images by true class (rows) and predicted class "
                             "(columns) at the threshold chosen on out-of-fold data, with each "
                             "row's share in brackets; the diagonal is correct."),
    "mistakes.png": ("Most confident mistakes (validation)",
                     "The validation images the model got most confidently wrong at the chosen "
                     "threshold, titled with the name prefix, true class and predicted "
                     "fake-probability; look for label noise or a forgery type the model misses."),
    "auc_by_method.png": ("AUC by manipulation method (validation)",
                          "ROC AUC of each forgery method's fakes against all real validation "
                          "images, worst on top; methods far below the dashed overall AUC are "
                          "where the detector generalises poorly."),
}

GLOSSARY = (
    ("ROC AUC", "The probability that a random fake gets a higher score than a random real "
                "image (0.5 is chance, 1 is perfect); the competition's ranking metric."),
    ("TPR@FPR=1e-3", "The share of fakes caught by the best threshold that flags at most one "
                     "real image in a thousand; the competition's tie-breaker."),
    ("AP", "Average precision: the area under the precision-recall curve for the fake class, "
           "which depends on the share of fakes (its chance level is that share)."),
    ("EER", "Equal error rate: the error rate at the threshold where the share of reals flagged "
            "fake equals the share of fakes missed (lower is better)."),
    ("log loss", "The mean negative log-probability given to the true class, which punishes "
                 "confident mistakes and rewards calibrated probabilities (lower is better)."),
    ("accuracy", "acc@0.5 is the share correct when flagging scores >= 0.5, which mostly mirrors "
                 "the class balance; acc@threshold uses the threshold chosen on out-of-fold data "
                 "by the configured policy and applied unchanged to validation."),
)


# Wall-clock figures vary from run to run: they go to the table and the HTML, not to
# metrics.json, so two runs with the same seed give identical metrics.json files (DVC diffs).
TIMING_KEYS = ("train_seconds", "images_per_s", "epoch_seconds")


# The few numbers that rank a run (the competition's AUC and its tie-break, TPR at FPR 1e-3):
# headline.json, what `dvc metrics show` and `dvc exp show` print; metrics.json holds the rest.
HEADLINE = {"val": ("auc", "tpr_at_fpr_1e-3", "log_loss"), "oof": ("auc",)}


def headline_metrics(metrics: dict) -> dict:
    """Validation AUC, TPR at FPR 1e-3 and log loss, out-of-fold AUC, and validation AUC per
    manipulation method (where the data names methods), taken from the full metrics."""
    out = {part: {key: metrics[part][key] for key in keys} for part, keys in HEADLINE.items()}
    if metrics.get("val_by_method"):
        out["val_by_method"] = dict(metrics["val_by_method"])
    return out


def _without_timings(metrics: dict) -> dict:
    out = dict(metrics)
    out["folds"] = {f: {k: v for k, v in entry.items() if k not in TIMING_KEYS}
                    for f, entry in metrics["folds"].items()}
    return out


def report_config(report_cfg: Mapping | None) -> dict:
    """`report_cfg` checked against the config schema, defaults filled in."""
    return validate_section("report", dict(report_cfg or {}))


def _join_val(val_pred: pd.DataFrame, val_labels: pd.DataFrame) -> pd.DataFrame:
    """Validation predictions with their labels; every labelled image must be predicted."""
    require_columns(val_pred, ("img_name", "y_pred"), "validation predictions")
    require_columns(val_labels, ("img_name", "target"), "validation labels")
    val = val_labels[["img_name", "target"]].merge(val_pred[["img_name", "y_pred"]], on="img_name",
                                                   how="outer", indicator=True)
    for side, what in (("left_only", "has a label but no prediction"),
                       ("right_only", "has a prediction but no label")):
        lost = val["img_name"][val["_merge"] == side]
        if len(lost):
            raise DataError(f"validation split: {len(lost)} image(s) {what}, e.g. {lost.iloc[0]!r}")
    return val.drop(columns="_merge").reset_index(drop=True)


def _rates_at(y: np.ndarray, s: np.ndarray, threshold: float) -> dict:
    flagged = s >= threshold
    n_fake, n_real = int(np.sum(y == 1)), int(np.sum(y == 0))
    return {"tpr": float(np.sum(flagged & (y == 1)) / n_fake) if n_fake else None,
            "fpr": float(np.sum(flagged & (y == 0)) / n_real) if n_real else None}


def _plain(obj):
    """JSON-safe copy: numpy scalars to Python, NaN/inf to None, keys to str."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _is_scalar(value) -> bool:
    return value is None or isinstance(value, (bool, int, float, str, np.generic))


def _fold_entry(metrics: dict, training: Mapping | None) -> dict:
    """OOF metrics of one fold plus the scalar training figures (clashing keys get train_)."""
    entry = dict(metrics)
    for key, value in (training or {}).items():
        if _is_scalar(value):
            entry[f"train_{key}" if key in entry else key] = value
    return entry


def select_confident_mistakes(val: pd.DataFrame, threshold: float, k: int) -> pd.DataFrame:
    """The k misclassified images with the highest probability given to the wrong class."""
    s = val["y_pred"].to_numpy(np.float64)
    y = val["target"].to_numpy()
    wrong = (s >= threshold) != (y == 1)
    mistakes = val[wrong].assign(wrong_confidence=np.where(y[wrong] == 1, 1.0 - s[wrong], s[wrong]))
    return mistakes.sort_values(["wrong_confidence", "img_name"], ascending=[False, True]).head(k)


def _gallery_images(val_images, val_index: pd.DataFrame, names: pd.Series) -> np.ndarray:
    """Rows of the validation cache for `names`; cache row i is index row i."""
    if "img_name" not in val_index.columns:
        raise DataError(f"validation cache index: no img_name column; has {list(val_index.columns)}")
    if len(val_index) != len(val_images):
        raise DataError(f"validation cache: index has {len(val_index)} rows but the image array "
                        f"has {len(val_images)}")
    row_of = pd.Series(np.arange(len(val_index)), index=val_index["img_name"].to_numpy())
    absent = names[~names.isin(row_of.index)]
    if len(absent):
        raise DataError(f"validation cache index: image {absent.iloc[0]!r} is not in the cache")
    return np.asarray(val_images[row_of[names.to_numpy()].to_numpy()])


def _fmt(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) < 1000 else f"{value:,.0f}"
    return html.escape(str(value))


def _table_rows(metrics: dict) -> list[dict]:
    """One row per fold, then oof and val: the content of metrics_table.csv."""
    rows = []
    for fold, entry in metrics["folds"].items():
        rows.append({"split": "fold", "fold": int(fold), **{k: entry.get(k) for k in METRIC_KEYS + TRAINING_KEYS}})
    for split in ("oof", "val"):
        rows.append({"split": split, "fold": None, **{k: metrics[split].get(k) for k in METRIC_KEYS}})
    return rows


def _provenance_table(provenance: dict | None) -> str:
    """The run's provenance (provenance.json) as a small table, or nothing."""
    if not provenance:
        return ""
    from .provenance import flat_items

    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in flat_items(provenance))
    return ('<h2 id="provenance">Provenance</h2><p>What produced this report (also in '
            f'<code>provenance.json</code>; each <code>best.pt</code> records the same for its training).</p>'
            f'<table class="provenance">{rows}</table>')


def _html_report(metrics: dict, plots: dict[str, Path], provenance: dict | None = None) -> str:
    headers = ("split", "n", "fakes", "reals", "ROC AUC", "TPR@FPR=1e-3", "AP", "EER", "log loss",
               "acc@0.5", "acc@threshold", "best epoch", "train s", "images/s")
    body = []
    for row in _table_rows(metrics):
        label = f"fold {row['fold']} (OOF)" if row["split"] == "fold" else {
            "oof": "all folds (OOF)", "val": "validation (submission)"}[row["split"]]
        cells = ([label] + [_fmt(row.get(k)) for k in METRIC_KEYS]
                 + [_fmt(row.get(k), digits=1) for k in ("best_epoch", "train_seconds", "images_per_s")])
        css = ' class="val"' if row["split"] == "val" else ""
        body.append(f"<tr{css}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    table = ("<table><tr>" + "".join(f"<th>{h}</th>" for h in headers) + "</tr>"
             + "".join(body) + "</table>")

    figures = []
    for name, path in plots.items():
        title, text = PLOT_EXPLANATIONS[name]
        data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
        figures.append(f'<figure><h3>{html.escape(title)}</h3><p>{html.escape(text)}</p>'
                       f'<img alt="{html.escape(title)}" src="data:image/png;base64,{data}"></figure>')

    by_method = ""
    if metrics.get("val_by_method"):
        counts = metrics.get("val_by_method_n_fake", {})
        gen = metrics.get("generalisation", {})
        unseen = set(gen.get("unseen_methods", []))
        by_method = ("<h2>Validation AUC by manipulation method</h2>"
                     f"<p>Seen in training: mean AUC <b>{_fmt(gen.get('seen_auc_mean'))}</b>; "
                     f"unseen in training: <b>{_fmt(gen.get('unseen_auc_mean'))}</b> "
                     f"(gap {_fmt(gen.get('gap'))}). A method is unseen when no training image was "
                     "made with it: how the detector fares on manipulations it was not taught.</p>"
                     "<table><tr><th>method</th><th>in training</th><th>fakes</th><th>ROC AUC</th></tr>"
                     + "".join(f"<tr><td>{html.escape(m)}</td><td>{'no (unseen)' if m in unseen else 'yes'}</td>"
                               f"<td>{_fmt(counts.get(m))}</td><td>{_fmt(a)}</td></tr>"
                               for m, a in metrics["val_by_method"].items())
                     + "</table>")

    glossary = "".join(f"<dt>{html.escape(t)}</dt><dd>{html.escape(d)}</dd>" for t, d in GLOSSARY)
    thr = metrics["threshold"]
    run_items = {**{f"submission: {k}": v for k, v in metrics["submission"].items()},
                 "threshold policy": thr["policy"], "threshold value (config)": thr["value"],
                 "threshold chosen on OOF": thr["threshold"], "OOF TPR / FPR at threshold":
                 f"{_fmt(thr['oof_tpr'])} / {_fmt(thr['oof_fpr'])}",
                 "validation TPR / FPR at threshold": f"{_fmt(thr['val_tpr'])} / {_fmt(thr['val_fpr'])}",
                 "deepfake_workflow version": __version__}
    run_info = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{_fmt(v)}</td></tr>" for k, v in run_items.items())
    warnings = "".join(f'<p class="warn">{html.escape(split)}: {html.escape(metrics[split]["warning"])}</p>'
                       for split in ("val", "oof") if "warning" in metrics[split])
    data_line = (f'<p class="data"><code>{html.escape(metrics["data"]["description"])}</code></p>'
                 if metrics.get("data") else "")
    val = metrics["val"]
    headline = (f"Validation ROC AUC <b>{_fmt(val['auc'])}</b>, TPR at FPR = 1e-3 "
                f"<b>{_fmt(val['tpr_at_fpr_1e-3'])}</b> on {val['n']} images "
                f"({val['n_fake']} fake, {val['n_real']} real).")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Deepfake detection validation report</title>
<style>
body {{ font-family: sans-serif; margin: 2em auto; max-width: 1150px; color: #222; line-height: 1.4; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }}
th {{ background: #f0f0f0; }} td:first-child, th:first-child {{ text-align: left; }}
tr.val td {{ font-weight: bold; background: #fff7e6; }}
figure {{ margin: 1.5em 0; }} figure img {{ max-width: 100%; border: 1px solid #ddd; }}
dt {{ font-weight: bold; margin-top: 0.5em; }} .warn {{ color: #a00; }}
</style></head><body>
<h1>Deepfake detection validation report</h1>
{data_line}<p>{headline}</p>{warnings}
<h2>Summary</h2>
<p>Folds are scored on their out-of-fold (OOF) predictions; the validation row scores the
submission's combined prediction on the official validation split.</p>
{table}{by_method}
<h2>Plots</h2>{"".join(figures)}
<h2>Glossary</h2><dl>{glossary}</dl>
<h2>Run information</h2><table>{run_info}</table>
{_provenance_table(provenance)}
</body></html>
"""


def seen_vs_unseen(val_by_method: dict, oof: pd.DataFrame, methods: pd.DataFrame) -> dict:
    """Which validation methods training never saw, and the mean AUC of seen and unseen ones.

    Training saw the methods of the fakes in the out-of-fold predictions (every training
    image is in exactly one held-out fold). The gap is how much a detector loses on
    manipulations it was not trained on: the competition's real difficulty.
    """
    train_fakes = oof.loc[oof["target"] == 1, ["img_name"]].merge(methods[["img_name", "method"]], on="img_name")
    seen = set(train_fakes["method"].dropna().astype(str))
    if not seen:  # the table names no training image's method: nothing is known to be unseen
        seen = set(val_by_method)
    unseen = sorted(m for m in val_by_method if m not in seen)

    def mean(names):
        values = [val_by_method[m] for m in names if val_by_method[m] is not None]
        return float(np.mean(values)) if values else None

    seen_mean, unseen_mean = mean([m for m in val_by_method if m in seen]), mean(unseen)
    gap = seen_mean - unseen_mean if seen_mean is not None and unseen_mean is not None else None
    return {"unseen_methods": unseen, "seen_auc_mean": seen_mean, "unseen_auc_mean": unseen_mean, "gap": gap}


def build_report(*, histories: dict[int, pd.DataFrame], fold_metrics: dict[int, dict], oof: pd.DataFrame,
                 val_pred: pd.DataFrame, val_labels: pd.DataFrame, methods: pd.DataFrame | None,
                 val_images: np.ndarray | None, val_index: pd.DataFrame | None,
                 report_cfg: dict, submission_info: dict, out_dir: Path,
                 data_info: dict | None = None, provenance: dict | None = None) -> dict:
    """Compute all metrics, write metrics.json, headline.json, metrics_table.csv, the plots and report.html
    into out_dir (each atomically) and return the metrics dict.

    `provenance` (provenance.collect()) goes to provenance.json and the HTML, never to
    metrics.json, which stays identical across runs with the same seed.

    `data_info` ({"description": one line, "source", "root", "n_images": {split: n}}) names the
    data the run used, at the top of the report. Plots that do not apply are skipped (and a stale
    copy from an earlier run removed):
    training_curves.png without history columns, mistakes.png without images, with
    gallery_size 0 or without mistakes, auc_by_method.png without methods.
    """
    from . import plots  # matplotlib import is slow; only the report needs it

    cfg = report_config(report_cfg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    require_columns(oof, ("img_name", "target", "y_pred", "fold"), "out-of-fold predictions")
    val = _join_val(val_pred, val_labels)

    try:
        threshold = choose_threshold(oof["target"], oof["y_pred"], cfg["threshold_policy"],
                                     cfg["threshold_value"])
    except MetricInputError as exc:
        raise DataError(f"out-of-fold predictions: cannot choose a threshold: {exc}") from exc
    y_val, s_val = val["target"].to_numpy(), val["y_pred"].to_numpy(np.float64)
    y_oof, s_oof = oof["target"].to_numpy(), oof["y_pred"].to_numpy(np.float64)
    metrics: dict = {
        "val": binary_metrics(y_val, s_val, threshold=threshold),
        "oof": binary_metrics(y_oof, s_oof, threshold=threshold),
        "folds": {},
    }
    fold_ids = sorted(oof["fold"].unique().tolist())
    for fold in fold_ids:
        part = oof[oof["fold"] == fold]
        fold_result = binary_metrics(part["target"], part["y_pred"], threshold=threshold)
        training = fold_metrics.get(fold, fold_metrics.get(str(fold)))  # int or JSON-style keys
        metrics["folds"][str(fold)] = _fold_entry(fold_result, training)
    fold_aucs = [f["auc"] for f in metrics["folds"].values() if f["auc"] is not None]
    if fold_aucs:
        metrics["oof"]["fold_auc_mean"] = float(np.mean(fold_aucs))
        metrics["oof"]["fold_auc_std"] = float(np.std(fold_aucs))
    metrics["threshold"] = {"policy": cfg["threshold_policy"], "value": cfg["threshold_value"],
                            "threshold": threshold, "chosen_on": "oof",
                            **{f"oof_{k}": v for k, v in _rates_at(y_oof, s_oof, threshold).items()},
                            **{f"val_{k}": v for k, v in _rates_at(y_val, s_val, threshold).items()}}

    by_method = {}
    if methods is not None:
        require_columns(methods, ("img_name", "method"), "method table")
        method_of = val[["img_name"]].merge(methods[["img_name", "method"]], on="img_name", how="left")["method"]
        by_method = auc_by_method(y_val, s_val, method_of)
        metrics["val_by_method"] = {m: r["auc"] for m, r in by_method.items()}
        metrics["val_by_method_n_fake"] = {m: r["n_fake"] for m, r in by_method.items()}
        metrics["generalisation"] = seen_vs_unseen(metrics["val_by_method"], oof, methods)

    # read the gallery thumbnails before drawing anything: a bad cache fails with no plot written
    gallery = None
    if cfg["gallery_size"] and val_images is not None and val_index is not None:
        worst = select_confident_mistakes(val, threshold, cfg["gallery_size"])
        metrics["mistakes"] = [{"img_name": r.img_name, "target": int(r.target), "y_pred": float(r.y_pred)}
                               for r in worst.itertuples()]
        if len(worst):
            titles = [f"{r.img_name[:8]}… {'fake' if r.target == 1 else 'real'}\np(fake)={r.y_pred:.3f}"
                      for r in worst.itertuples()]
            gallery = (_gallery_images(val_images, val_index, worst["img_name"]), titles)

    written: dict[str, Path] = {}
    curves = {f"fold {f} OOF": (oof.loc[oof["fold"] == f, "target"].to_numpy(),
                                oof.loc[oof["fold"] == f, "y_pred"].to_numpy(np.float64))
              for f in fold_ids if metrics["folds"][str(f)]["auc"] is not None}
    if metrics["val"]["auc"] is not None:
        curves["validation"] = (y_val, s_val)
    if curves:
        written["roc.png"] = plots.plot_roc_curves(curves, out_dir / "roc.png", log_fpr=cfg["roc_log_scale"],
                                                   highlight="validation")
    if histories and plots.training_curve_panels(histories):
        written["training_curves.png"] = plots.plot_training_curves(histories, out_dir / "training_curves.png")
    written["score_histogram.png"] = plots.plot_score_histogram(
        y_val, s_val, out_dir / "score_histogram.png", bins=cfg["histogram_bins"], threshold=threshold)
    written["confusion_matrix.png"] = plots.plot_confusion_matrix(y_val, s_val, threshold,
                                                                  out_dir / "confusion_matrix.png")
    if gallery is not None:
        written["mistakes.png"] = plots.plot_mistakes_gallery(*gallery, out_dir / "mistakes.png")
    if any(a is not None for a in metrics.get("val_by_method", {}).values()):
        written["auc_by_method.png"] = plots.plot_auc_by_method(
            metrics["val_by_method"], out_dir / "auc_by_method.png",
            counts=metrics["val_by_method_n_fake"], overall=metrics["val"]["auc"],
            unseen=metrics["generalisation"]["unseen_methods"])
    for stale in set(PLOT_EXPLANATIONS) - set(written):
        (out_dir / stale).unlink(missing_ok=True)

    metrics["plots"] = sorted(written)
    metrics["submission"] = dict(submission_info)
    if data_info is not None:
        metrics["data"] = dict(data_info)
    metrics = _plain(metrics)
    write_json(out_dir / "metrics.json", _without_timings(metrics), allow_nan=False)
    write_json(out_dir / "headline.json", headline_metrics(metrics), allow_nan=False)
    rows = _table_rows(metrics)
    table = pd.DataFrame(rows)
    for column in table.columns:  # integer columns with gaps stay integers (2, not 2.0)
        present = [row.get(column) for row in rows if row.get(column) is not None]
        if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
            table[column] = table[column].astype("Int64")
    write_csv(table, out_dir / "metrics_table.csv")
    ordered = {name: written[name] for name in PLOT_EXPLANATIONS if name in written}
    if provenance is not None:
        write_json(out_dir / "provenance.json", _plain(provenance))
    write_text(out_dir / "report.html", _html_report(metrics, ordered, provenance))
    return _without_timings(metrics)
