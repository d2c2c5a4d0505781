"""The submission file: which fold models it uses, their parameter budget, and its checks."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .atomic import write_csv
from .errors import ConfigError, DataError

STRATEGIES = ("ensemble", "best_fold")


def models_used(strategy: str, k: int) -> int:
    return k if strategy == "ensemble" else 1


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
        raise DataError(f"{source}, row {i + 2}: y_pred for '{sub['img_name'].iloc[i]}' is not a number ({sub['y_pred'].iloc[i]!r})")
    out = (y < 0) | (y > 1)
    if out.any():
        i = int(np.argmax(out))
        raise DataError(f"{source}, row {i + 2}: y_pred {y[i]} for '{sub['img_name'].iloc[i]}' is outside [0, 1]")


def write_submission(sub: pd.DataFrame, expected_names: pd.Series, path: str | Path) -> None:
    """Validate, order rows as the test list, then write atomically."""
    validate_submission(sub, expected_names, source=str(path))
    ordered = sub.set_index("img_name").loc[list(expected_names)].reset_index()
    write_csv(ordered[["img_name", "y_pred"]], path, float_format="%.6f")
