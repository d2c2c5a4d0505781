"""Submission checks and the parameter budget."""
import pandas as pd
import pytest

from deepfake_workflow.errors import ConfigError, DataError
from deepfake_workflow.submission import check_submission_budget, validate_submission, write_submission

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
