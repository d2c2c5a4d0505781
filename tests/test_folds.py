"""Stratified, seeded folds."""
import pandas as pd
import pytest

from deepfake_workflow.errors import DataError
from deepfake_workflow.folds import make_folds


def labels(n_fake, n_real):
    t = [1] * n_fake + [0] * n_real
    return pd.DataFrame({"img_name": [f"{i:032x}.jpg" for i in range(len(t))], "target": t})


def test_folds_are_stratified_and_cover_everything():
    df = make_folds(labels(80, 20), k=5, seed=1)
    assert sorted(df["fold"].unique()) == [0, 1, 2, 3, 4]
    per_fold = df.groupby("fold")["target"].agg(["size", "sum"])
    assert (per_fold["size"] == 20).all() and (per_fold["sum"] == 16).all()
    assert df["img_name"].tolist() == labels(80, 20)["img_name"].tolist()


def test_same_seed_same_folds_other_seed_differs():
    a = make_folds(labels(50, 30), k=3, seed=7)
    assert a.equals(make_folds(labels(50, 30), k=3, seed=7))
    assert not a.equals(make_folds(labels(50, 30), k=3, seed=8))


def test_too_few_of_a_class_for_k_folds():
    with pytest.raises(DataError, match="no fold ends up with one class"):
        make_folds(labels(20, 2), k=3, seed=0)
    with pytest.raises(DataError, match="0 real"):
        make_folds(labels(20, 0), k=2, seed=0)
