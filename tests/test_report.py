"""build_report on a synthetic 3-fold run: files, metrics.json content, self-contained HTML."""
import json
import re

import numpy as np
import pandas as pd
import pytest

from deepfake_workflow.errors import ConfigError, DataError
from deepfake_workflow.metrics import binary_metrics, choose_threshold
from deepfake_workflow.plots import make_gallery_figure
from deepfake_workflow.report import DEFAULTS, PLOT_EXPLANATIONS, build_report

ALL_PLOTS = {"roc.png", "training_curves.png", "score_histogram.png", "confusion_matrix.png",
             "mistakes.png", "auc_by_method.png"}
THUMB = 16


def names(prefix, n):
    return [f"{prefix}{i:030d}.jpg" for i in range(n)]


def scores(rng, y, strength=2.0):
    return 1.0 / (1.0 + np.exp(-(rng.normal(size=len(y)) + strength * y - strength / 2)))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Predictions, histories and a real memmapped validation cache for three folds."""
    rng = np.random.default_rng(0)
    tmp = tmp_path_factory.mktemp("cache")
    n_train, n_val = 360, 200
    y_train = (rng.random(n_train) < 0.8).astype(int)
    oof = pd.DataFrame({"img_name": names("t", n_train), "target": y_train,
                        "y_pred": scores(rng, y_train), "fold": np.arange(n_train) % 3})
    y_val = (rng.random(n_val) < 0.6).astype(int)
    val_labels = pd.DataFrame({"img_name": names("v", n_val), "target": y_val})
    # predictions in another order than the labels: the report joins by name
    val_pred = pd.DataFrame({"img_name": val_labels["img_name"], "y_pred": scores(rng, y_val)}).iloc[::-1]
    method_names = np.where(y_val == 1, np.array(["gan", "diffusion", "faceswap"])[np.arange(n_val) % 3], "real")
    methods = pd.DataFrame({"img_name": val_labels["img_name"], "method": method_names})
    images = np.lib.format.open_memmap(tmp / "val.npy", mode="w+", dtype=np.uint8,
                                       shape=(n_val, THUMB, THUMB, 3))
    images[:] = rng.integers(0, 256, size=images.shape, dtype=np.uint8)
    images.flush()
    histories = {f: pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [0.6, 0.5, 0.45],
                                  "val_loss": [0.62, 0.55, 0.56], "val_auc": [0.7, 0.8, 0.79 + f / 100],
                                  "lr": [1e-3, 5e-4, 1e-4]}) for f in range(3)}
    fold_metrics = {f: {"best_epoch": 2, "best_val_auc": 0.8, "train_seconds": 12.5 + f,
                        "images_per_s": 310.0, "n_params": 1234, "auc": 0.5, "history": [1, 2]}
                    for f in range(3)}
    return dict(histories=histories, fold_metrics=fold_metrics, oof=oof, val_pred=val_pred,
                val_labels=val_labels, methods=methods,
                val_images=np.load(tmp / "val.npy", mmap_mode="r"), val_index=val_labels.copy(),
                submission_info={"strategy": "ensemble", "folds": [0, 1, 2], "n_params": 3702})


def build(run, out_dir, **overrides):
    args = {**run, "report_cfg": {"gallery_size": 8}, "out_dir": out_dir}
    args.update(overrides)
    return build_report(**args)


def strict_json(path):
    def no_constants(name):
        raise AssertionError(f"{path} contains {name}")
    return json.loads(path.read_text(), parse_constant=no_constants)


def test_full_report_writes_every_file(run, tmp_path):
    returned = build(run, tmp_path)
    assert {p.name for p in tmp_path.glob("*.png")} == ALL_PLOTS
    assert not list(tmp_path.glob(".tmp-*"))  # every write was atomic and finished
    metrics = strict_json(tmp_path / "metrics.json")
    assert metrics == returned
    # the headline numbers (DVC's metrics), copied from the full metrics
    assert strict_json(tmp_path / "headline.json") == {
        "val": {k: metrics["val"][k] for k in ("auc", "tpr_at_fpr_1e-3", "log_loss")},
        "oof": {"auc": metrics["oof"]["auc"]}, "val_by_method": metrics["val_by_method"]}
    assert {"val", "oof", "folds", "val_by_method", "threshold", "submission"} <= set(metrics)
    assert metrics["submission"]["strategy"] == "ensemble"
    assert set(metrics["plots"]) == ALL_PLOTS

    # the threshold comes from OOF data and is applied unchanged to validation
    oof, val_pred, val_labels = run["oof"], run["val_pred"], run["val_labels"]
    thr = choose_threshold(oof["target"], oof["y_pred"], DEFAULTS["threshold_policy"])
    assert metrics["threshold"]["threshold"] == pytest.approx(thr)
    assert metrics["threshold"]["chosen_on"] == "oof"
    val = val_labels.merge(val_pred, on="img_name")
    assert metrics["val"] == pytest.approx(binary_metrics(val["target"], val["y_pred"], threshold=thr))
    assert metrics["val"]["n"] == 200 and "acc_at_threshold" in metrics["oof"]

    assert set(metrics["folds"]) == {"0", "1", "2"}
    fold1 = metrics["folds"]["1"]
    part = oof[oof["fold"] == 1]
    assert fold1["auc"] == pytest.approx(binary_metrics(part["target"], part["y_pred"])["auc"])
    assert fold1["train_auc"] == 0.5  # a training figure never overwrites an OOF metric
    assert fold1["best_epoch"] == 2
    assert "history" not in fold1  # only scalar training figures are copied
    # timings vary between runs: in the table, not in metrics.json (identical across same-seed runs)
    assert "train_seconds" not in fold1 and "images_per_s" not in fold1
    table = pd.read_csv(tmp_path / "metrics_table.csv")
    assert table.loc[table["fold"] == 1, ["train_seconds", "images_per_s"]].values.tolist() == [[13.5, 310.0]]

    assert set(metrics["val_by_method"]) == {"gan", "diffusion", "faceswap"}
    assert all(0.0 <= a <= 1.0 for a in metrics["val_by_method"].values())
    assert len(metrics["mistakes"]) == 8
    worst = metrics["mistakes"]
    wrong_conf = [m["y_pred"] if m["target"] == 0 else 1 - m["y_pred"] for m in worst]
    assert wrong_conf == sorted(wrong_conf, reverse=True)
    assert all((m["y_pred"] >= thr) != (m["target"] == 1) for m in worst)

    table = pd.read_csv(tmp_path / "metrics_table.csv")
    assert table["split"].tolist() == ["fold", "fold", "fold", "oof", "val"]
    assert table["fold"].iloc[:3].tolist() == [0, 1, 2] and table["fold"].iloc[3:].isna().all()
    assert table.loc[4, "auc"] == pytest.approx(metrics["val"]["auc"])
    assert (tmp_path / "metrics_table.csv").read_text().splitlines()[1].startswith("fold,0,120,")


def test_html_is_self_contained(run, tmp_path):
    build(run, tmp_path)
    page = (tmp_path / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page)
    assert "http://" not in page and "https://" not in page
    assert page.count('src="data:image/png;base64,') == len(ALL_PLOTS)
    assert "<link" not in page and "<script" not in page
    for title, _text in PLOT_EXPLANATIONS.values():
        assert title in page
    for term in ("ROC AUC", "TPR@FPR=1e-3", "EER", "log loss", "acc@0.5", "Glossary"):
        assert term in page
    assert "fold 2 (OOF)" in page and "validation (submission)" in page


def test_gallery_figure_has_one_thumbnail_per_image():
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(5, THUMB, THUMB, 3), dtype=np.uint8)
    fig = make_gallery_figure(images, [f"img {i}" for i in range(5)], ncols=3)
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 5 and len(fig.axes) == 6  # 2x3 grid, last cell empty
    assert [ax.get_title() for ax in shown] == [f"img {i}" for i in range(5)]
    with pytest.raises(DataError, match="titles"):
        make_gallery_figure(images, ["only one"])


def test_optional_parts_are_skipped_and_stale_plots_removed(run, tmp_path):
    build(run, tmp_path)
    metrics = build(run, tmp_path, methods=None, histories={},
                    report_cfg={"gallery_size": 0, "threshold_policy": "fpr", "threshold_value": 0.05,
                                "roc_log_scale": False})
    assert {p.name for p in tmp_path.glob("*.png")} == {"roc.png", "score_histogram.png",
                                                         "confusion_matrix.png"}
    assert "val_by_method" not in metrics and "mistakes" not in metrics
    assert set(strict_json(tmp_path / "headline.json")) == {"val", "oof"}  # no stale per-method AUC
    assert metrics["threshold"]["policy"] == "fpr" and metrics["threshold"]["oof_fpr"] <= 0.05
    page = (tmp_path / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and "AUC by manipulation method" not in page


def test_one_class_validation_gives_nulls_not_nan(run, tmp_path):
    fakes = run["val_labels"]["target"] == 1
    labels = run["val_labels"][fakes]
    pred = run["val_pred"][run["val_pred"]["img_name"].isin(labels["img_name"])]
    metrics = build(run, tmp_path, val_labels=labels, val_pred=pred, methods=None, val_images=None)
    assert metrics["val"]["auc"] is None and "only fake" in metrics["val"]["warning"]
    strict_json(tmp_path / "metrics.json")
    assert strict_json(tmp_path / "headline.json")["val"]["auc"] is None  # JSON null, not NaN
    assert "only fake" in (tmp_path / "report.html").read_text()


def test_bad_inputs_name_the_problem(run, tmp_path):
    with pytest.raises(DataError, match=r"label but no prediction, e\.g\. 'v0+199\.jpg'"):
        build(run, tmp_path, val_pred=run["val_pred"].iloc[1:])
    with pytest.raises(DataError, match=r"out-of-fold predictions: missing column\(s\) \['fold'\]"):
        build(run, tmp_path, oof=run["oof"].drop(columns="fold"))
    with pytest.raises(ConfigError, match="report.gallery_size"):
        build(run, tmp_path, report_cfg={"gallery_size": -1})
    with pytest.raises(ConfigError, match="report.threshold_policy"):
        build(run, tmp_path, report_cfg={"threshold_policy": "best"})
    with pytest.raises(DataError, match="index has 199 rows"):
        build(run, tmp_path, val_index=run["val_index"].iloc[1:])
    assert not list(tmp_path.iterdir())  # nothing written when the input is bad


def test_methods_unseen_in_training_are_marked_with_the_seen_unseen_gap(run, tmp_path):
    # training images made with gan and diffusion only: faceswap is unseen
    train_methods = pd.DataFrame({"img_name": run["oof"]["img_name"],
                                  "method": np.where(run["oof"]["target"] == 1,
                                                     np.where(np.arange(len(run["oof"])) % 2, "gan", "diffusion"),
                                                     "real")})
    methods = pd.concat([run["methods"], train_methods], ignore_index=True)
    y = run["val_labels"]["target"].to_numpy()
    # the detector is perfect on the seen methods and at chance on faceswap
    val_methods = run["methods"]["method"].to_numpy()
    rng = np.random.default_rng(3)
    score = np.where(val_methods == "faceswap", rng.random(len(y)), np.where(y == 1, 0.9, 0.1))
    score[y == 0] = rng.random((y == 0).sum()) * 0.5
    val_pred = pd.DataFrame({"img_name": run["val_labels"]["img_name"], "y_pred": score})
    metrics = build(run, tmp_path, methods=methods, val_pred=val_pred)
    gen = metrics["generalisation"]
    assert gen["unseen_methods"] == ["faceswap"]
    assert gen["seen_auc_mean"] == pytest.approx(1.0) and gen["unseen_auc_mean"] < 0.8
    assert gen["gap"] == pytest.approx(gen["seen_auc_mean"] - gen["unseen_auc_mean"])
    html = (tmp_path / "report.html").read_text()
    assert "<td>faceswap</td><td>no (unseen)</td>" in html and "<td>gan</td><td>yes</td>" in html
    assert strict_json(tmp_path / "metrics.json")["generalisation"]["unseen_methods"] == ["faceswap"]


def test_provenance_goes_to_its_own_file_and_the_html_never_to_metrics(run, tmp_path):
    prov = {"versions": {"torch": "9.9.9"}, "git": {"commit": "abc123", "dirty": False}, "config_sha256": "f00d"}
    returned = build(run, tmp_path, provenance=prov)
    assert strict_json(tmp_path / "provenance.json") == prov
    assert "provenance" not in returned and "abc123" not in (tmp_path / "metrics.json").read_text()
    html = (tmp_path / "report.html").read_text()
    assert 'id="provenance"' in html and "<th>versions torch</th><td>9.9.9</td>" in html
    assert "<th>git commit</th><td>abc123</td>" in html
