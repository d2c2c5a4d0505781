"""Metrics: agreement with scikit-learn, hand-checked small cases, thresholds, fold combining."""
import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from deepfake_workflow.errors import ConfigError, DataError
from deepfake_workflow.metrics import (
    auc_by_method,
    binary_metrics,
    choose_threshold,
    combine_fold_predictions,
)


def synthetic(rng, n=6000, fake_share=0.6, ties=False):
    y = (rng.random(n) < fake_share).astype(int)
    s = 1.0 / (1.0 + np.exp(-(rng.normal(size=n) + 2.5 * y - 1.0)))
    if ties:
        s = np.round(s, 2)  # many equal scores across both classes
    return y, s


@pytest.mark.parametrize("ties", [False, True])
def test_agrees_with_sklearn(ties):
    y, s = synthetic(np.random.default_rng(1), ties=ties)
    m = binary_metrics(y, s)
    assert m["n"] == len(y) and m["n_fake"] == y.sum() and m["n_real"] == len(y) - y.sum()
    assert m["auc"] == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert m["ap"] == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, np.clip(s, 1e-7, 1 - 1e-7)), abs=1e-12)
    assert m["acc_at_0.5"] == pytest.approx(skm.accuracy_score(y, s >= 0.5))
    fpr, tpr, _ = skm.roc_curve(y, s, drop_intermediate=False)
    assert m["tpr_at_fpr_1e-3"] == pytest.approx(tpr[fpr <= 1e-3].max())
    # EER: at the sklearn point where FPR and FNR are closest, both are within one step of it
    fnr = 1 - tpr
    k = np.argmin(np.abs(fpr - fnr))
    step = 1 / m["n_real"] + 1 / m["n_fake"]
    assert abs(m["eer"] - fpr[k]) <= step + abs(fpr[k] - fnr[k])
    assert 0.05 < m["eer"] < 0.4


def test_perfect_and_reversed_separation():
    y = np.array([0, 0, 0, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    perfect = binary_metrics(y, s)
    assert perfect["auc"] == 1.0 and perfect["eer"] == 0.0 and perfect["ap"] == 1.0
    assert perfect["tpr_at_fpr_1e-3"] == 1.0 and perfect["acc_at_0.5"] == 1.0
    reversed_ = binary_metrics(y, 1 - s)
    assert reversed_["auc"] == 0.0 and reversed_["eer"] == 1.0 and reversed_["tpr_at_fpr_1e-3"] == 0.0
    # all scores tied: chance
    assert binary_metrics(y, np.full(5, 0.5))["auc"] == 0.5


def test_small_hand_checked_case():
    # ROC points: (0,.5) (.5,.5) (.5,1) (1,1): AUC 3/4, FPR = FNR = 1/2 at threshold 0.6
    m = binary_metrics([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9], threshold=0.5)
    assert m["auc"] == 0.75 and m["eer"] == 0.5
    assert m["threshold"] == 0.5 and m["acc_at_threshold"] == 0.5


def test_tpr_at_fpr_uses_largest_tpr_within_the_fpr_budget():
    reals = np.r_[np.linspace(0.0, 0.5, 999), 0.95]  # one real scores high
    fakes = np.array([0.99, 0.97, 0.9, 0.8, 0.3])
    y = np.r_[np.zeros(1000), np.ones(5)]
    # 1000 reals: one false positive is FPR 1e-3, allowed; fakes down to 0.8 are caught
    assert binary_metrics(y, np.r_[reals, fakes])["tpr_at_fpr_1e-3"] == pytest.approx(0.8)
    # 999 reals: one false positive is FPR 1.001e-3, too many; only the two above 0.95 count
    y999 = np.r_[np.zeros(999), np.ones(5)]
    assert binary_metrics(y999, np.r_[reals[1:], fakes])["tpr_at_fpr_1e-3"] == pytest.approx(0.4)


def test_log_loss_clips_certain_mistakes():
    m = binary_metrics([0, 1], [1.0, 0.0])
    assert np.isfinite(m["log_loss"]) and m["log_loss"] == pytest.approx(-np.log(1e-7), rel=1e-6)


def test_one_class_gives_none_and_a_warning():
    m = binary_metrics([1, 1, 1], [0.2, 0.7, 0.9], threshold=0.5)
    for key in ("auc", "tpr_at_fpr_1e-3", "ap", "eer"):
        assert m[key] is None
    assert "only fake" in m["warning"]
    assert m["acc_at_threshold"] == pytest.approx(2 / 3) and m["log_loss"] > 0
    assert "warning" not in binary_metrics([0, 1], [0.2, 0.7])


def test_bad_input_raises():
    with pytest.raises(ValueError, match="NaN score"):
        binary_metrics([0, 1, 1], [0.1, np.nan, 0.4])
    with pytest.raises(DataError, match="row 1 is 2"):
        binary_metrics([0, 2], [0.1, 0.4])
    with pytest.raises(ValueError, match="3 labels but 2 scores"):
        binary_metrics([0, 1, 1], [0.1, 0.4])
    with pytest.raises(ValueError, match="empty"):
        binary_metrics([], [])


def test_scores_outside_unit_interval_have_no_log_loss():
    m = binary_metrics([0, 1], [-3.0, 2.0])
    assert m["log_loss"] is None and m["auc"] == 1.0 and "log_loss" in m["warning"]


THR_Y = np.array([0, 0, 0, 1, 1, 1])
THR_S = np.array([0.1, 0.2, 0.7, 0.6, 0.8, 0.9])
# thresholds .9 .8 .7 .6: (tpr, fpr) = (1/3,0) (2/3,0) (2/3,1/3) (1,1/3)


@pytest.mark.parametrize("policy, value, expected", [
    ("youden", None, 0.8),  # J = 2/3 at 0.8 and 0.6: the higher threshold wins
    ("eer", None, 0.7),  # FPR = FNR = 1/3
    ("fpr", 0.0, 0.8),
    ("fpr", 0.34, 0.6),
    ("fixed", 0.42, 0.42),
])
def test_threshold_policies(policy, value, expected):
    assert choose_threshold(THR_Y, THR_S, policy, value) == pytest.approx(expected)


def test_fpr_policy_flags_nothing_when_top_score_is_real():
    thr = choose_threshold([1, 0], [0.2, 0.9], "fpr", 0.0)
    assert thr > 0.9 and binary_metrics([1, 0], [0.2, 0.9], threshold=thr)["acc_at_threshold"] == 0.5


def test_youden_threshold_on_random_data_maximises_j():
    y, s = synthetic(np.random.default_rng(2), n=2000)
    thr = choose_threshold(y, s, "youden")
    j = lambda t: np.mean(s[y == 1] >= t) - np.mean(s[y == 0] >= t)  # noqa: E731
    assert j(thr) >= max(j(t) for t in np.unique(s)) - 1e-12


def test_threshold_policy_errors():
    with pytest.raises(ConfigError, match="threshold_policy"):
        choose_threshold(THR_Y, THR_S, "median")
    with pytest.raises(ConfigError, match="threshold_value"):
        choose_threshold(THR_Y, THR_S, "fpr", None)
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        choose_threshold(THR_Y, THR_S, "fpr", 2.0)
    with pytest.raises(ValueError, match="both"):
        choose_threshold([1, 1], [0.3, 0.4], "youden")


def test_auc_by_method_pools_reals():
    y = np.array([0, 0, 0, 1, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.9, 0.8, 0.05, 0.25])
    methods = ["real", None, "real", "gan", "gan", "diffusion", "diffusion"]
    out = auc_by_method(y, s, methods)
    assert set(out) == {"gan", "diffusion"}
    assert out["gan"] == {"auc": 1.0, "n_fake": 2}
    assert out["diffusion"]["auc"] == pytest.approx(2 / 6)  # only 0.25 beats reals, two of three


def frame(names, preds):
    return pd.DataFrame({"img_name": names, "y_pred": preds})


def test_combine_ensemble_means_per_name_in_first_frame_order():
    frames = {
        0: frame(["c", "a", "b"], [0.2, 0.4, 0.6]),
        1: frame(["a", "b", "c"], [0.0, 1.0, 0.4]),  # other order: aligned by name
        2: frame(["b", "c", "a"], [0.8, 0.0, 0.2]),
    }
    out = combine_fold_predictions(frames)
    assert list(out.columns) == ["img_name", "y_pred"]
    assert out["img_name"].tolist() == ["c", "a", "b"]
    assert out["y_pred"].to_numpy() == pytest.approx([0.2, 0.2, 0.8])


def test_combine_uses_only_the_chosen_folds():
    frames = {0: frame(["a", "b"], [0.1, 0.2]), 1: frame(["b", "a"], [0.9, 0.7])}
    out = combine_fold_predictions(frames, [1])
    assert out["img_name"].tolist() == ["a", "b"] and out["y_pred"].tolist() == [0.7, 0.9]
    with pytest.raises(ValueError, match="no predictions of fold 2"):
        combine_fold_predictions(frames, [2])


def test_combine_rejects_mismatched_names_and_bad_frames():
    frames = {0: frame(["a", "b"], [0.1, 0.2]), 3: frame(["a", "x"], [0.1, 0.2])}
    with pytest.raises(ValueError, match=r"fold 3 .*'b'.*'x'"):
        combine_fold_predictions(frames)
    with pytest.raises(ValueError, match="fold 0: img_name 'a' appears twice"):
        combine_fold_predictions({0: frame(["a", "a"], [0.1, 0.2])})
    with pytest.raises(ValueError, match="fold 0: missing column"):
        combine_fold_predictions({0: pd.DataFrame({"img_name": ["a"]})})
