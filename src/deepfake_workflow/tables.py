"""Checks shared by every stage that reads a per-image table (index, folds, predictions)."""
from __future__ import annotations

import pandas as pd

from .errors import DataError


def require_columns(df: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    """The table has these columns and each img_name at most once; else DataError naming `what`."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{what}: missing column(s) {missing}; has {list(df.columns)}")
    dup = df["img_name"][df["img_name"].duplicated()]
    if len(dup):
        raise DataError(f"{what}: img_name {dup.iloc[0]!r} appears more than once")
