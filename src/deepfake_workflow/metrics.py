"""Metrics for binary deepfake detection (target 1 = fake, score = probability of fake).

The competition ranks by ROC AUC and breaks ties with the TPR at FPR = 1e-3, so both are
computed from one tie-aware ROC curve built here (a single sort, fast on 10^6 scores).
Accuracy is reported too, but with ~81% fakes in train and ~60% in val it mostly tracks
the class balance; the threshold for `acc_at_threshold` is chosen on out-of-fold data.

Convention everywhere: an image is flagged fake when `score >= threshold`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .config import schema_choices
from .errors import ConfigError, DataError

TARGET_FPR = 1e-3
LOG_LOSS_EPS = 1e-7  # float32 sigmoids reach exactly 0/1; clip so one image cannot give inf
THRESHOLD_POLICIES = schema_choices("report.threshold_policy")


class MetricInputError(DataError, ValueError):
    """Labels or scores unusable for metrics (NaN, wrong shape, labels not 0/1)."""


@dataclass(frozen=True)
class RocCurve:
    """ROC points for decreasing thresholds; point 0 is (0, 0) at threshold +inf.

    The integer counts behind the rates are kept so that ties between operating
    points (equal Youden J, equal error rates) are compared exactly, not in floats.
    """

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray
    fps: np.ndarray  # reals flagged fake at each point
    tps: np.ndarray  # fakes flagged fake at each point
    n_real: int
    n_fake: int


def _as_arrays(y_true, y_score) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert labels to int8 and scores to float64."""
    y = np.asarray(y_true)
    s = np.asarray(y_score, dtype=np.float64)
    if y.ndim != 1 or s.ndim != 1:
        raise MetricInputError(f"labels and scores must be 1-D, got shapes {y.shape} and {s.shape}")
    if len(y) != len(s):
        raise MetricInputError(f"{len(y)} labels but {len(s)} scores")
    if len(y) == 0:
        raise MetricInputError("no samples: labels and scores are empty")
    nan_rows = np.flatnonzero(np.isnan(s))
    if len(nan_rows):
        raise MetricInputError(
            f"{len(nan_rows)} NaN score(s), first at row {int(nan_rows[0])}"
        )
    if np.isinf(s).any():
        raise MetricInputError(f"infinite score at row {int(np.flatnonzero(np.isinf(s))[0])}")
    try:
        y_num = y.astype(np.float64)
    except (TypeError, ValueError):
        raise MetricInputError(f"labels must be 0 or 1, got dtype {y.dtype}") from None
    bad = np.flatnonzero(~np.isin(y_num, (0.0, 1.0)))
    if len(bad):
        raise MetricInputError(
            f"labels must be 0 (real) or 1 (fake); row {int(bad[0])} is {np.asarray(y[bad[0]]).item()!r}"
        )
    return y_num.astype(np.int8), s


def roc_curve(y_true, y_score) -> RocCurve:
    """Tie-aware ROC curve: one point per distinct score, plus the (0, 0) start.

    Needs both classes; raises MetricInputError otherwise.
    """
    y, s = _as_arrays(y_true, y_score)
    n_fake = int(y.sum())
    n_real = len(y) - n_fake
    if n_fake == 0 or n_real == 0:
        raise MetricInputError("ROC needs both real (0) and fake (1) samples")
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    # last index of each run of equal scores: tied images cross the threshold together
    run_ends = np.r_[np.flatnonzero(np.diff(s_sorted)), len(s) - 1]
    tps = np.cumsum(y[order], dtype=np.int64)[run_ends]
    fps = run_ends + 1 - tps
    fps, tps = np.r_[0, fps], np.r_[0, tps]
    return RocCurve(fpr=fps / n_real, tpr=tps / n_fake, thresholds=np.r_[np.inf, s_sorted[run_ends]],
                    fps=fps, tps=tps, n_real=n_real, n_fake=n_fake)


def _auc(roc: RocCurve) -> float:
    # trapezoids over the tie-aware curve == Mann-Whitney U with ties counted 1/2
    return float(np.sum(np.diff(roc.fpr) * (roc.tpr[1:] + roc.tpr[:-1]) / 2.0))


def _tpr_at_fpr_index(roc: RocCurve, max_fpr: float) -> int:
    """Index of the highest-TPR point with FPR <= max_fpr (points are monotone)."""
    return int(np.searchsorted(roc.fpr, max_fpr, side="right") - 1)


def _eer_point(roc: RocCurve) -> tuple[float, int]:
    """EER (linear interpolation where FPR = FNR) and the nearest ROC point index.

    Along the curve FPR - FNR rises from -1 at (0, 0) to +1 at (1, 1); the EER is
    where it crosses zero.
    """
    gap = roc.fpr - (1.0 - roc.tpr)
    k = int(np.searchsorted(gap, 0.0, side="left"))  # first point with FPR >= FNR
    if gap[k] == 0.0 or k == 0:
        eer = float(roc.fpr[k])
    else:
        w = -gap[k - 1] / (gap[k] - gap[k - 1])
        eer = float(roc.fpr[k - 1] + w * (roc.fpr[k] - roc.fpr[k - 1]))
    # the operating point closest to equal errors: smallest worse-of-both error rate,
    # ties broken by the smaller FPR-FNR gap, then by the higher threshold. Rates are
    # compared as integers scaled by n_real * n_fake.
    fp_scaled = roc.fps * roc.n_fake
    fn_scaled = (roc.n_fake - roc.tps) * roc.n_real
    worst = np.maximum(fp_scaled, fn_scaled)
    worst[0] = np.iinfo(np.int64).max  # the +inf threshold flags nothing; never an operating point
    order = np.lexsort((np.arange(len(worst)), np.abs(fp_scaled - fn_scaled), worst))
    return eer, int(order[0])


def _average_precision(y: np.ndarray, s: np.ndarray) -> float:
    """AP = sum over distinct thresholds of (recall step) x precision (no interpolation)."""
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    run_ends = np.r_[np.flatnonzero(np.diff(s_sorted)), len(s) - 1]
    tps = np.cumsum(y[order], dtype=np.int64)[run_ends]
    precision = tps / (run_ends + 1)
    recall_steps = np.diff(np.r_[0, tps]) / tps[-1]
    return float(np.sum(recall_steps * precision))


def _log_loss(y: np.ndarray, s: np.ndarray) -> float:
    p = np.clip(s, LOG_LOSS_EPS, 1.0 - LOG_LOSS_EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def binary_metrics(y_true, y_score, *, threshold: float | None = None) -> dict:
    """All report metrics for one set of predictions.

    Keys: n, n_fake, n_real, auc, tpr_at_fpr_1e-3 (largest TPR whose FPR <= 1e-3), ap,
    eer, log_loss (probabilities clipped to [1e-7, 1 - 1e-7]), acc_at_0.5, and with a
    threshold also `threshold` and `acc_at_threshold`. With one class only the ranking
    metrics are None and `warning` says why; with scores outside [0, 1] log_loss is None.
    Raises MetricInputError (a ValueError) for NaN scores or labels other than 0/1.
    """
    y, s = _as_arrays(y_true, y_score)
    n_fake = int(y.sum())
    out: dict = {"n": len(y), "n_fake": n_fake, "n_real": len(y) - n_fake}
    warnings = []
    if n_fake and out["n_real"]:
        roc = roc_curve(y, s)
        out["auc"] = _auc(roc)
        out["tpr_at_fpr_1e-3"] = float(roc.tpr[_tpr_at_fpr_index(roc, TARGET_FPR)])
        out["ap"] = _average_precision(y, s)
        out["eer"] = _eer_point(roc)[0]
    else:
        present = "fake (1)" if n_fake else "real (0)"
        warnings.append(f"only {present} samples: auc, tpr_at_fpr_1e-3, ap and eer are undefined")
        out.update({"auc": None, "tpr_at_fpr_1e-3": None, "ap": None, "eer": None})
    if s.min() < 0.0 or s.max() > 1.0:
        warnings.append("scores outside [0, 1] are not probabilities: log_loss is undefined")
        out["log_loss"] = None
    else:
        out["log_loss"] = _log_loss(y, s)
    out["acc_at_0.5"] = float(np.mean((s >= 0.5) == (y == 1)))
    if threshold is not None:
        out["threshold"] = float(threshold)
        out["acc_at_threshold"] = float(np.mean((s >= threshold) == (y == 1)))
    if warnings:
        out["warning"] = "; ".join(warnings)
    return out


def choose_threshold(y_true, y_score, policy: str = "youden", value: float | None = None) -> float:
    """Pick a decision threshold (flag fake when score >= threshold) on out-of-fold data.

    youden: maximise TPR - FPR. eer: the point closest to FPR = FNR. fpr: the highest-TPR
    threshold whose FPR <= value (above every score if none is). fixed: `value` itself.
    """
    if policy not in THRESHOLD_POLICIES:
        raise ConfigError(
            f"report.threshold_policy: unknown policy {policy!r}, expected one of {THRESHOLD_POLICIES}"
        )
    if policy in ("fpr", "fixed"):
        if value is None or not np.isfinite(value):
            raise ConfigError(f"report.threshold_value: policy {policy!r} needs a number, got {value!r}")
        if policy == "fpr" and not 0.0 <= value <= 1.0:
            raise ConfigError(f"report.threshold_value: an FPR must lie in [0, 1], got {value!r}")
    if policy == "fixed":
        return float(value)
    roc = roc_curve(y_true, y_score)
    if policy == "youden":
        # J = TPR - FPR scaled by n_real * n_fake: exact integers, so ties are real ties
        j = roc.tps[1:] * roc.n_real - roc.fps[1:] * roc.n_fake  # skip the +inf start point
        k = 1 + int(np.argmax(j))  # first maximum = highest such threshold
    elif policy == "eer":
        k = _eer_point(roc)[1]
    else:
        k = _tpr_at_fpr_index(roc, float(value))
        if k == 0:  # even the top score is a false positive: flag nothing
            return float(np.nextafter(roc.thresholds[1], np.inf))
    return float(roc.thresholds[k])


def auc_by_method(y_true, y_score, methods) -> dict[str, dict]:
    """AUC of each fake method against all real images: {method: {"auc", "n_fake"}}.

    Reals are pooled whatever their method label; a fake with no method counts as
    "unknown". Methods are sorted by name.
    """
    y, s = _as_arrays(y_true, y_score)
    m = pd.Series(methods, dtype="object").fillna("unknown").astype(str).to_numpy()
    if len(m) != len(y):
        raise MetricInputError(f"{len(m)} method labels but {len(y)} samples")
    real = y == 0
    out: dict[str, dict] = {}
    for method in sorted(set(m[~real])):
        pick = real | (m == method)
        auc = binary_metrics(y[pick], s[pick])["auc"]
        out[method] = {"auc": auc, "n_fake": int(np.sum(~real & (m == method)))}
    return out


def _check_prediction_frame(fold, frame: pd.DataFrame) -> None:
    missing = {"img_name", "y_pred"} - set(frame.columns)
    if missing:
        raise MetricInputError(f"predictions of fold {fold}: missing column(s) {sorted(missing)}")
    dup = frame["img_name"][frame["img_name"].duplicated()]
    if len(dup):
        raise MetricInputError(f"predictions of fold {fold}: img_name {dup.iloc[0]!r} appears twice")
    if frame["y_pred"].isna().any():
        bad = frame["img_name"][frame["y_pred"].isna()].iloc[0]
        raise MetricInputError(f"predictions of fold {fold}: y_pred is NaN for {bad!r}")


def combine_fold_predictions(frames: dict[int, pd.DataFrame], use: list[int] | None = None) -> pd.DataFrame:
    """Average per-fold predictions (img_name, y_pred) on the same images into one frame.

    `use` lists the folds to average (`submission.folds_used` decides which; default: all).
    Every frame must list the same images; the result follows the first frame's order.
    """
    if not frames:
        raise MetricInputError("no fold predictions to combine")
    folds = list(frames)
    for fold in folds:
        _check_prediction_frame(fold, frames[fold])
    names = frames[folds[0]]["img_name"]
    expected = set(names)
    for fold in folds[1:]:
        got = set(frames[fold]["img_name"])
        if got != expected:
            extra, lacking = sorted(got - expected), sorted(expected - got)
            detail = []
            if lacking:
                detail.append(f"{len(lacking)} image(s) missing, e.g. {lacking[0]!r}")
            if extra:
                detail.append(f"{len(extra)} extra image(s), e.g. {extra[0]!r}")
            raise MetricInputError(
                f"predictions of fold {fold} do not list the same images as fold {folds[0]}: "
                + ", ".join(detail)
            )
    use = folds if use is None else list(use)
    missing = [f for f in use if f not in frames]
    if missing or not use:
        raise MetricInputError(f"no predictions of fold {missing[0]}" if missing else "no fold chosen")
    aligned = [frames[f].set_index("img_name")["y_pred"].reindex(names).to_numpy(np.float64) for f in use]
    return pd.DataFrame({"img_name": names.to_numpy(), "y_pred": np.mean(np.stack(aligned), axis=0)})
