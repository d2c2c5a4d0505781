"""The submission file: which fold models it uses, their parameter budget, and its checks.

`folds_used` is the one place that decides which folds a strategy uses; the report, the
submission and the budget check all ask it.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from .atomic import write_csv
from .config import schema_choices
from .errors import ConfigError, DataError

STRATEGIES = schema_choices("submit.strategy")


def _check_strategy(strategy: str) -> None:
    if strategy not in STRATEGIES:
        raise ConfigError(f"submit.strategy: unknown {strategy!r}, expected one of {', '.join(STRATEGIES)}")


def folds_used(strategy: str, fold_scores: dict[int, float | None]) -> list[int]:
    """The folds whose models the submission uses.

    ensemble: every fold. best_fold: the fold with the highest held-out score (ties: the lowest
    fold); folds without a score (None or NaN: a held-out split with one class) cannot be best.
    """
    _check_strategy(strategy)
    folds = sorted(fold_scores)
    if not folds:
        raise DataError("no fold models to choose from")
    if strategy == "ensemble":
        return folds
    scored = [f for f in folds if fold_scores[f] is not None and math.isfinite(fold_scores[f])]
    if not scored:
        raise DataError("submit.strategy 'best_fold': no fold has a validation AUC (all null or NaN)")
    return [max(scored, key=lambda f: fold_scores[f])]  # max keeps the first of ties


def models_used(strategy: str, k: int) -> int:
    """How many models a strategy puts in the submission with k folds (for the budget check)."""
    return len(folds_used(strategy, dict.fromkeys(range(k), 0.0)))


def read_fold_metrics(paths) -> dict[int, dict]:
    """The per-fold metrics.json files of the train stage, by fold, checked.

    `best_val_auc` must be a number or null (a fold whose held-out split has one class).
    """
    out: dict[int, dict] = {}
    for path in map(Path, paths):
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"{path}: not a JSON fold metrics file ({exc})") from None
        fold, score = (info.get("fold"), info.get("best_val_auc")) if isinstance(info, dict) else (None, None)
        if isinstance(fold, bool) or not isinstance(fold, int):
            raise DataError(f"{path}: 'fold' must be an integer, got {fold!r}")
        if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))):
            raise DataError(f"{path}: 'best_val_auc' must be a number or null, got {score!r}")
        if fold in out:
            raise DataError(f"{path}: fold {fold} is listed twice")
        out[fold] = info
    return out


def fold_scores(fold_metrics: dict[int, dict]) -> dict[int, float | None]:
    """Each fold's held-out AUC (None where it is undefined), the score best_fold ranks by."""
    return {f: (None if m["best_val_auc"] is None else float(m["best_val_auc"])) for f, m in fold_metrics.items()}


def check_submission_budget(n_params: int, strategy: str, k: int, max_params: int) -> int:
    """Every model the submission uses counts against submit.max_params (competition rule)."""
    total = n_params * models_used(strategy, k)
    if total > max_params:
        fits = [s for s in STRATEGIES if n_params * models_used(s, k) <= max_params]
        hint = (f"strategy '{fits[0]}' fits ({n_params * models_used(fits[0], k):,} parameters)" if fits
                else "no strategy fits: choose a smaller model.name")
        raise ConfigError(
            f"config key 'submit.strategy': '{strategy}' uses {models_used(strategy, k)} model(s) of "
            f"{n_params:,} parameters = {total:,}, over submit.max_params = {max_params:,}; {hint}"
        )
    return total


def validate_submission(sub: pd.DataFrame, expected_names: pd.Series, *, source: str = "submission") -> None:
    """Header img_name,y_pred; every test image exactly once; 0 <= y_pred <= 1; no NaN."""
    if list(sub.columns) != ["img_name", "y_pred"]:
        raise DataError(f"{source}: columns are {list(sub.columns)}, expected ['img_name', 'y_pred']")
    dup = sub["img_name"].duplicated()
    if dup.any():
        raise DataError(f"{source}: image '{sub.loc[dup.idxmax(), 'img_name']}' appears more than once "
                        f"({int(dup.sum())} duplicate row(s))")
    expected = set(expected_names)
    got = set(sub["img_name"])
    missing, extra = expected - got, got - expected
    if missing:
        raise DataError(f"{source}: {len(missing)} test image(s) have no prediction, e.g. {sorted(missing)[:3]}")
    if extra:
        raise DataError(f"{source}: {len(extra)} row(s) name images not in the test list, e.g. {sorted(extra)[:3]}")
    y = pd.to_numeric(sub["y_pred"], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(y)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"{source}, row {i + 2}: y_pred for '{sub['img_name'].iloc[i]}' is not a number "
                        f"({sub['y_pred'].iloc[i]!r})")
    out = (y < 0) | (y > 1)
    if out.any():
        i = int(np.argmax(out))
        raise DataError(f"{source}, row {i + 2}: y_pred {y[i]} for '{sub['img_name'].iloc[i]}' is outside [0, 1]")


def write_submission(sub: pd.DataFrame, expected_names: pd.Series, path: str | Path) -> None:
    """Validate, order rows as the test list, then write atomically."""
    validate_submission(sub, expected_names, source=str(path))
    ordered = sub.set_index("img_name").loc[list(expected_names)].reset_index()
    write_csv(ordered[["img_name", "y_pred"]], path, float_format="%.6f")
