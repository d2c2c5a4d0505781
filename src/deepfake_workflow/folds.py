"""Stratified, seeded cross-validation folds over the training labels."""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from .errors import DataError


def make_folds(labels: pd.DataFrame, k: int, seed: int) -> pd.DataFrame:
    """Return img_name,target,fold with every fold holding both classes in the overall ratio.

    Built from the label file, not the cache, so changing the cache never re-splits.
    Rows keep the label file's order.
    """
    counts = labels["target"].value_counts()
    smallest = int(counts.min()) if len(counts) == 2 else 0
    if len(counts) < 2 or smallest < k:
        raise DataError(
            f"cannot make {k} stratified folds: the training labels have "
            f"{int(counts.get(0, 0))} real and {int(counts.get(1, 0))} fake images; "
            f"each class needs at least folds.k = {k} images so that no fold ends up with one class"
        )
    fold = np.full(len(labels), -1, dtype=int)
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for i, (_, held_out) in enumerate(splitter.split(np.zeros(len(labels)), labels["target"].to_numpy())):
        fold[held_out] = i
    out = labels[["img_name", "target"]].copy()
    out["fold"] = fold
    return out
