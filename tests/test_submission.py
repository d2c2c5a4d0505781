"""Submission checks, the choice of fold models and the parameter budget."""
import json
import subprocess
import sys

import pandas as pd
import pytest

from deepfake_workflow.errors import ConfigError, DataError
from deepfake_workflow.layout import SplitManifest
from deepfake_workflow.submission import (
    check_submission_budget,
    fold_scores,
    folds_used,
    read_fold_metrics,
    validate_submission,
    write_submission,
)

NAMES = pd.Series([f"{i:032x}.jpg" for i in range(3)])


def sub(preds, names=None):
    names = list(names if names is not None else NAMES)[: len(preds)]
    return pd.DataFrame({"img_name": names, "y_pred": preds})


def test_valid_submission_is_written_in_test_list_order(tmp_path):
    out = tmp_path / "submission.csv"
    write_submission(sub([0.1, 0.5, 0.9]).iloc[::-1], NAMES, out)
    back = pd.read_csv(out)
    assert list(back.columns) == ["img_name", "y_pred"]
    assert back["img_name"].tolist() == NAMES.tolist() and back["y_pred"].tolist() == [0.1, 0.5, 0.9]


@pytest.mark.parametrize("frame, needle", [
    (sub([0.1, float("nan"), 0.3]), "row 3: y_pred for"),
    (sub([0.1, 1.5, 0.3]), "outside [0, 1]"),
    (sub([0.1, -0.01, 0.3]), "outside [0, 1]"),
    (sub([0.1, 0.2]), "1 test image(s) have no prediction"),
    (sub([0.1, 0.2, 0.3, 0.4], list(NAMES) + ["other.jpg"]), "not in the test list"),
    (sub([0.1, 0.2, 0.3], [NAMES[0], NAMES[0], NAMES[1]]), "appears more than once"),
    (sub([0.1, 0.2, 0.3]).rename(columns={"y_pred": "pred"}), "expected ['img_name', 'y_pred']"),
])
def test_bad_submissions_fail_loudly_and_write_nothing(tmp_path, frame, needle):
    out = tmp_path / "submission.csv"
    with pytest.raises(DataError) as err:
        write_submission(frame, NAMES, out)
    assert needle in str(err.value)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_budget_counts_every_model_and_says_which_strategy_fits():
    assert check_submission_budget(50_000_000, "ensemble", 3, 200_000_000) == 150_000_000
    with pytest.raises(ConfigError) as err:
        check_submission_budget(88_000_000, "ensemble", 5, 200_000_000)
    assert "submit.strategy" in str(err.value) and "strategy 'best_fold' fits" in str(err.value)
    with pytest.raises(ConfigError, match="no strategy fits"):
        check_submission_budget(300_000_000, "best_fold", 5, 200_000_000)


def test_validate_accepts_edge_values():
    validate_submission(sub([0.0, 1.0, 0.5]), NAMES)


def test_folds_used_decides_for_every_strategy():
    scores = {0: 0.91, 1: 0.95, 2: 0.95}
    assert folds_used("ensemble", scores) == [0, 1, 2]
    assert folds_used("best_fold", scores) == [1]  # ties: the lowest fold
    assert folds_used("best_fold", {0: None, 1: float("nan"), 2: 0.6}) == [2]
    with pytest.raises(DataError, match="no fold has a validation AUC"):
        folds_used("best_fold", {0: None, 1: float("nan")})
    with pytest.raises(ConfigError, match="submit.strategy: unknown 'vote'"):
        folds_used("vote", scores)


def _fold_files(tmp_path, aucs):
    """Per-fold metrics.json and test predictions as the train and predict stages write them."""
    metrics, preds = [], []
    for fold, auc in enumerate(aucs):
        m = tmp_path / f"metrics{fold}.json"
        m.write_text(json.dumps({"fold": fold, "best_val_auc": auc}), encoding="utf-8")
        p = tmp_path / f"pred{fold}.csv"
        pd.DataFrame({"img_name": NAMES, "y_pred": [0.1 + 0.3 * fold] * len(NAMES)}).to_csv(p, index=False)
        metrics.append(str(m))
        preds.append(str(p))
    return metrics, preds


def test_fold_metrics_with_null_auc_are_read_and_bad_ones_named(tmp_path):
    metrics, _ = _fold_files(tmp_path, [None, 0.8])
    assert fold_scores(read_fold_metrics(metrics)) == {0: None, 1: 0.8}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"fold": 0, "best_val_auc": "high"}), encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.json: 'best_val_auc' must be a number or null"):
        read_fold_metrics([bad])
    bad.write_text("{", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.json: not a JSON fold metrics file"):
        read_fold_metrics([bad])


@pytest.mark.parametrize("aucs, rc, needle", [
    ([None, 0.8], 0, "best_fold, folds [1]"),
    ([None, None], 2, "error: submit.strategy 'best_fold': no fold has a validation AUC"),
])
def test_submit_stage_with_a_null_fold(tmp_path, aucs, rc, needle):
    """A fold that wrote best_val_auc: null is skipped by best_fold, or ends in one clear line."""
    metrics, preds = _fold_files(tmp_path, aucs)
    labels = tmp_path / "test.csv"
    pd.DataFrame({"img_name": NAMES}).to_csv(labels, index=False)
    manifest = tmp_path / "manifest.json"
    SplitManifest(split="test", images=str(tmp_path), labels=str(labels), n_images=len(NAMES), n_fake=0,
                  n_real=0, labels_sha256="").write(manifest)
    out = tmp_path / "submission.csv"
    proc = subprocess.run(
        [sys.executable, "scripts/submit.py", "--config-json", json.dumps({"submit": {"strategy": "best_fold"}}),
         "--split-manifest", str(manifest), "--predictions", *preds, "--fold-metrics", *metrics, "--out", str(out)],
        capture_output=True, text=True)
    assert proc.returncode == rc, proc.stderr
    assert needle in proc.stdout + proc.stderr and "Traceback" not in proc.stderr
    if rc == 0:
        assert pd.read_csv(out)["y_pred"].tolist() == pytest.approx([0.4] * len(NAMES))
    else:
        assert not out.exists()
