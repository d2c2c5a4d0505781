"""Report figures. Each function draws one matplotlib Figure, writes it as a PNG atomically
and returns the path.

Figures are built with `matplotlib.figure.Figure` (Agg canvas) rather than pyplot: no
display is needed and no global figure list grows when a report is built repeatedly.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: cluster nodes have no display

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .atomic import atomic_path  # noqa: E402
from .errors import DataError  # noqa: E402
from .metrics import TARGET_FPR, binary_metrics, roc_curve  # noqa: E402

DPI = 100
REAL_COLOR, FAKE_COLOR = "#2c7fb8", "#d95f0e"
# history columns drawn by plot_training_curves, one panel each (missing ones are skipped)
LOSS_COLUMNS = ("train_loss", "val_loss")
AUC_COLUMN = "val_auc"
LR_COLUMN = "lr"


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        # the temp name has no .png suffix, so say the format; fixed metadata keeps reruns identical
        fig.savefig(tmp, format="png", dpi=DPI, metadata={"Software": None})
    return path


def plot_roc_curves(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    path: str | os.PathLike,
    *,
    log_fpr: bool = False,
    highlight: str | None = None,
) -> Path:
    """ROC curve per entry {label: (y_true, y_score)}, AUC in the legend.

    `highlight` (e.g. the validation split) is drawn thick and black. With `log_fpr` the
    FPR axis is logarithmic, which makes the region around FPR = 1e-3 readable.
    """
    fig = Figure(figsize=(6.5, 5.5))
    ax = fig.add_subplot()
    smallest_fpr = 1.0
    for label, (y_true, y_score) in curves.items():
        roc = roc_curve(y_true, y_score)
        auc = binary_metrics(y_true, y_score)["auc"]
        n_real = len(y_true) - int(np.sum(y_true))
        smallest_fpr = min(smallest_fpr, 1.0 / n_real)
        style = {"color": "black", "lw": 2.5, "zorder": 3} if label == highlight else {"lw": 1.2, "alpha": 0.8}
        fpr = roc.fpr
        if log_fpr:  # a log axis cannot show FPR = 0; pin it to the left edge instead
            fpr = np.maximum(fpr, 0.5 / n_real)
        ax.plot(fpr, roc.tpr, drawstyle="steps-post" if log_fpr else "default",
                label=f"{label} (AUC {auc:.4f})", **style)
    if log_fpr:
        ax.set_xscale("log")
        ax.set_xlim(min(0.5 * smallest_fpr, 0.5 * TARGET_FPR), 1.0)
    else:
        ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=1, label="chance")
        ax.set_xlim(0, 1)
    ax.axvline(TARGET_FPR, ls="--", color="grey", lw=1)
    ax.text(TARGET_FPR, 0.02, " FPR=1e-3", color="grey", fontsize=8)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate (reals flagged fake)" + (", log scale" if log_fpr else ""))
    ax.set_ylabel("true positive rate (fakes caught)")
    ax.set_title("ROC curves")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def training_curve_panels(histories: Mapping[int, pd.DataFrame]) -> list[str]:
    """Which panels ('loss', 'val_auc', 'lr') the histories have data for."""
    columns = set().union(*(set(h.columns) for h in histories.values())) if histories else set()
    panels = []
    if columns & set(LOSS_COLUMNS):
        panels.append("loss")
    if AUC_COLUMN in columns:
        panels.append("val_auc")
    if LR_COLUMN in columns:
        panels.append("lr")
    return panels


def plot_training_curves(histories: Mapping[int, pd.DataFrame], path: str | os.PathLike) -> Path:
    """Loss (train solid, val dashed), validation AUC and learning rate per epoch, one
    colour per fold. Histories have an `epoch` column (else rows count 1, 2, ...) and any
    of train_loss, val_loss, val_auc, lr."""
    panels = training_curve_panels(histories)
    if not panels:
        raise DataError(
            f"training histories have none of the columns {LOSS_COLUMNS + (AUC_COLUMN, LR_COLUMN)}"
        )
    fig = Figure(figsize=(4.2 * len(panels), 3.8))
    axes = dict(zip(panels, fig.subplots(1, len(panels), squeeze=False)[0], strict=True))
    colors = matplotlib.colormaps["tab10"]
    for i, (fold, hist) in enumerate(sorted(histories.items())):
        epoch = hist["epoch"] if "epoch" in hist else np.arange(1, len(hist) + 1)
        c = colors(i % 10)
        if "loss" in axes:
            for col, ls in zip(LOSS_COLUMNS, ("-", "--"), strict=True):
                if col in hist:
                    axes["loss"].plot(epoch, hist[col], ls=ls, color=c, marker=".",
                                      label=f"fold {fold} {col.split('_')[0]}")
        if "val_auc" in axes and AUC_COLUMN in hist:
            axes["val_auc"].plot(epoch, hist[AUC_COLUMN], color=c, marker=".", label=f"fold {fold}")
        if "lr" in axes and LR_COLUMN in hist:
            axes["lr"].plot(epoch, hist[LR_COLUMN], color=c, marker=".", label=f"fold {fold}")
    titles = {"loss": "loss (solid train, dashed val)", "val_auc": "validation AUC", "lr": "learning rate"}
    for name, ax in axes.items():
        ax.set_title(titles[name])
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if "lr" in axes and all((h[LR_COLUMN] > 0).all() for h in histories.values() if LR_COLUMN in h):
        axes["lr"].set_yscale("log")
    fig.tight_layout()
    return _save(fig, path)


def plot_score_histogram(
    y_true, y_score, path: str | os.PathLike, *, bins: int = 50, threshold: float | None = None
) -> Path:
    """Histograms of the fake-probability for real and for fake images (log count axis,
    so a small tail of confident mistakes stays visible), with the threshold marked."""
    y = np.asarray(y_true)
    s = np.asarray(y_score, dtype=np.float64)
    lo, hi = min(0.0, s.min()), max(1.0, s.max())
    edges = np.linspace(lo, hi, bins + 1)
    fig = Figure(figsize=(6.5, 4.2))
    ax = fig.add_subplot()
    for cls, color, name in ((0, REAL_COLOR, "real"), (1, FAKE_COLOR, "fake")):
        ax.hist(s[y == cls], bins=edges, histtype="stepfilled", color=color, alpha=0.45,
                edgecolor=color, linewidth=1.2, label=f"{name} (n={int(np.sum(y == cls))})")
    if threshold is not None:
        ax.axvline(threshold, color="black", ls="--", lw=1, label=f"threshold {threshold:.3g}")
    ax.set_yscale("log")
    ax.set_ylim(bottom=0.5)  # bins holding a single image stay visible on the log axis
    ax.set_xlabel("predicted probability of fake")
    ax.set_ylabel("images (log scale)")
    ax.set_title("score distribution by true class")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_confusion_matrix(y_true, y_score, threshold: float, path: str | os.PathLike) -> Path:
    """2x2 counts (rows: true class, columns: predicted at score >= threshold) with the
    share of each true class in brackets."""
    y = np.asarray(y_true).astype(int)
    pred = (np.asarray(y_score, dtype=np.float64) >= threshold).astype(int)
    cm = np.array([[np.sum((y == t) & (pred == p)) for p in (0, 1)] for t in (0, 1)])
    row_share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig = Figure(figsize=(4.6, 4.0))
    ax = fig.add_subplot()
    ax.imshow(row_share, cmap="Blues", vmin=0, vmax=1)
    for t in (0, 1):
        for p in (0, 1):
            ax.text(p, t, f"{cm[t, p]}\n({row_share[t, p]:.1%})", ha="center", va="center",
                    color="white" if row_share[t, p] > 0.6 else "black")
    ax.set_xticks([0, 1], ["real", "fake"])
    ax.set_yticks([0, 1], ["real", "fake"])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"confusion matrix at threshold {threshold:.3g}")
    fig.tight_layout()
    return _save(fig, path)


def make_gallery_figure(images: np.ndarray, titles: Sequence[str], *, ncols: int = 6) -> Figure:
    """Grid of thumbnails (N, S, S, 3) uint8, one title each; empty cells are hidden."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise DataError(f"gallery images must have shape (N, S, S, 3), got {images.shape}")
    if len(images) != len(titles) or len(images) == 0:
        raise DataError(f"gallery: {len(images)} images but {len(titles)} titles")
    ncols = min(ncols, len(images))
    nrows = -(-len(images) // ncols)
    fig = Figure(figsize=(2.2 * ncols, 2.5 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, img, title in zip(axes, images, titles, strict=False):
        ax.imshow(img)
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return fig


def plot_mistakes_gallery(
    images: np.ndarray, titles: Sequence[str], path: str | os.PathLike, *, ncols: int = 6
) -> Path:
    """Write the thumbnail grid of make_gallery_figure."""
    return _save(make_gallery_figure(images, titles, ncols=ncols), path)


def plot_auc_by_method(
    aucs: Mapping[str, float], path: str | os.PathLike, *, counts: Mapping[str, int] | None = None,
    overall: float | None = None, unseen: Sequence[str] = (),
) -> Path:
    """Horizontal bars: AUC of each fake method against all reals, worst method on top;
    methods never seen in training are hatched and marked."""
    items = sorted(((m, a) for m, a in aucs.items() if a is not None), key=lambda kv: kv[1])
    if not items:
        raise DataError("no method has a defined AUC to plot")
    fig = Figure(figsize=(6.5, 1.2 + 0.35 * len(items)))
    ax = fig.add_subplot()
    labels = [(f"{m} (n={counts[m]})" if counts and m in counts else m) + (", unseen" if m in unseen else "")
              for m, _ in items]
    values = [a for _, a in items]
    bars = ax.barh(range(len(items)), values, color=FAKE_COLOR)
    for bar, (m, _) in zip(bars, items, strict=True):
        if m in unseen:
            bar.set_hatch("//")
            bar.set_edgecolor("white")
    for i, v in enumerate(values):
        ax.text(0.01, i, f"{v:.4f}", va="center", ha="left", color="white", fontsize=8, fontweight="bold")
    title = "AUC by manipulation method" + ("; hatched: unseen in training" if any(m in unseen for m, _ in items)
                                            else "")
    if overall is not None:
        ax.axvline(overall, color="black", ls="--", lw=1)
        title += f" (dashed: all fakes, {overall:.4f})"
    ax.set_yticks(range(len(items)), labels, fontsize=8)
    ax.invert_yaxis()  # worst method on top
    ax.set_xlim(0, 1)
    ax.set_xlabel("ROC AUC (this method's fakes vs all reals)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
