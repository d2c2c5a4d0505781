"""Fold training, resume, determinism, inference and augmentation on a tiny cache."""
from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
import torch

from deepfake_workflow.augment import Augmenter, jpeg_roundtrip
from deepfake_workflow.checkpoint import load_checkpoint
from deepfake_workflow.errors import ConfigError, DataError
from deepfake_workflow.inference import predict_images
from deepfake_workflow.training import DEFAULTS, HISTORY_COLUMNS, resolve_train_cfg, train_fold

N, SIZE = 40, 32
MODEL = {"name": "test_resnet", "pretrained": False}
TRAIN = {"epochs": 2, "batch_size": 8, "max_train_batches": 2, "num_workers": 0, "lr": 3.0e-3,
         "warmup_epochs": 0.5, "ema": True, "ema_decay": 0.9,
         "augment": {"hflip": 0.5, "vflip": 0.2, "rrc_scale": [0.8, 1.0], "jpeg_p": 0.5,
                     "jpeg_quality": [50, 90], "color_jitter": 0.2}}
# columns that depend on wall-clock time, not on the computation
TIMING = ["images_per_s", "epoch_seconds"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return write_tiny_cache(tmp_path_factory.mktemp("cache"))


def write_tiny_cache(root):
    """A memmap cache as build_cache writes it, and a 2-fold split. Fakes are redder."""
    rng = np.random.default_rng(0)
    target = np.arange(N) % 2
    images = np.lib.format.open_memmap(root / "images.npy", mode="w+", dtype=np.uint8,
                                       shape=(N, SIZE, SIZE, 3))
    pixels = rng.integers(0, 200, (N, SIZE, SIZE, 3))
    pixels[target == 1, :, :, 0] += 55
    images[:] = pixels
    images.flush()
    del images
    index = pd.DataFrame({"img_name": [f"{i:032x}.jpg" for i in range(N)], "target": target,
                          "width": 64})
    folds = index[["img_name", "target"]].assign(fold=(np.arange(N) // 2) % 2)
    return np.load(root / "images.npy", mmap_mode="r"), index, folds


def run(cache, tmp, train=None, fold=0, **kwargs):
    images, index, folds = cache
    return train_fold(images=images, index=index, folds=kwargs.pop("folds", folds), fold=fold,
                      model_cfg=kwargs.pop("model_cfg", MODEL), train_cfg={**TRAIN, **(train or {})},
                      seed=kwargs.pop("seed", 7), out_dir=tmp / "out", state_dir=tmp / "state",
                      progress=False, **kwargs)


def outputs(tmp):
    history = pd.read_csv(tmp / "out" / "history.csv")
    oof = pd.read_csv(tmp / "out" / "oof.csv")
    best = torch.load(tmp / "out" / "best.pt", weights_only=True)
    return history, oof, best


@pytest.fixture(scope="module")
def trained(cache, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trained")
    metrics = run(cache, tmp)
    return tmp, metrics


def check_fold_outputs(out_dir, folds, fold, *, epochs, image_size, model_name) -> dict:
    """What a finished fold's training must have written to `out_dir`, whether one process or several
    (tests/test_ddp.py) trained it; returns metrics.json."""
    history = pd.read_csv(out_dir / "history.csv")
    oof = pd.read_csv(out_dir / "oof.csv")
    best = torch.load(out_dir / "best.pt", weights_only=True)
    assert list(history.columns) == HISTORY_COLUMNS and list(history["epoch"]) == list(range(1, epochs + 1))
    assert history["images_per_s"].gt(0).all() and history["val_auc"].between(0, 1).all()
    held = folds[folds["fold"] == fold]
    assert list(oof.columns) == ["img_name", "target", "y_pred", "fold"]
    assert sorted(oof["img_name"]) == sorted(held["img_name"]) and (oof["fold"] == fold).all()
    assert oof["y_pred"].between(0, 1).all()
    assert set(best) >= {"state_dict", "model_name", "num_classes", "mean", "std", "image_size",
                         "epoch", "val_auc"}
    assert best["image_size"] == image_size and best["model_name"] == model_name
    saved = json.loads((out_dir / "metrics.json").read_text())
    assert saved["best_epoch"] == best["epoch"] == int(history["val_auc"].idxmax()) + 1
    assert saved["best_val_auc"] == pytest.approx(history["val_auc"].max())
    assert saved["epochs_run"] == epochs and saved["device"] == "cpu" and saved["precision"] == "fp32"
    assert saved["n_params"] > 0 and saved["images_per_s"] > 0
    return saved


def check_checkpoint_reproduces_oof(out_dir, images, index) -> np.ndarray:
    """best.pt scores the held-out images as oof.csv says (each score with its own image); returns
    its probabilities for every cached image."""
    model, meta = load_checkpoint(out_dir / "best.pt")
    oof = pd.read_csv(out_dir / "oof.csv")
    rows = index.reset_index().set_index("img_name").loc[oof["img_name"], "index"].to_numpy()
    probs = predict_images(model, meta, images, batch_size=16, progress=False)
    assert probs.shape == (len(images),) and probs.dtype == np.float64
    assert ((probs >= 0) & (probs <= 1)).all()
    np.testing.assert_allclose(probs[rows], oof["y_pred"].to_numpy(), atol=1e-5)
    return probs


def test_train_fold_writes_all_outputs(cache, trained):
    tmp, metrics = trained
    _, index, folds = cache
    saved = check_fold_outputs(tmp / "out", folds, 0, epochs=2, image_size=SIZE, model_name="test_resnet")
    assert saved == metrics
    assert not (tmp / "state" / "last.pt").exists()  # resume state is removed after success


def test_checkpoint_reproduces_oof_and_tta(cache, trained):
    images, index, _ = cache
    tmp, _ = trained
    model, meta = load_checkpoint(tmp / "out" / "best.pt")
    probs = check_checkpoint_reproduces_oof(tmp / "out", images, index)
    # hflip TTA = mean probability of the image and its mirror
    tta = predict_images(model, meta, images, tta="hflip", progress=False)
    mirrored = predict_images(model, meta, np.ascontiguousarray(images[:, :, ::-1]), progress=False)
    np.testing.assert_allclose(tta, (probs + mirrored) / 2, atol=1e-6)
    assert not np.allclose(tta, probs)
    with pytest.raises(ConfigError, match="tta"):
        predict_images(model, meta, images, tta="vflip", progress=False)
    # on a CPU device, workers normalise the batches (loader.HostPreparation): the same scores
    in_workers = predict_images(model, meta, images, tta="hflip", num_workers=2, progress=False)
    assert np.array_equal(in_workers, tta)


def test_same_seed_same_result_whatever_the_workers(cache, trained, tmp_path):
    first, _ = trained
    run(cache, tmp_path, {"num_workers": 2})
    h1, o1, b1 = outputs(first)
    h2, o2, b2 = outputs(tmp_path)
    pd.testing.assert_frame_equal(h1.drop(columns=TIMING), h2.drop(columns=TIMING))
    pd.testing.assert_frame_equal(o1, o2)
    for key, value in b1["state_dict"].items():
        assert torch.equal(value, b2["state_dict"][key]), key


def test_other_seed_other_result(cache, trained, tmp_path):
    run(cache, tmp_path, seed=8)
    h1, _, _ = outputs(trained[0])
    h2, _, _ = outputs(tmp_path)
    assert not np.allclose(h1["train_loss"], h2["train_loss"])


class Killed(Exception):
    pass


def test_resume_after_kill_equals_uninterrupted_run(cache, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="deepfake_workflow")
    train = {"epochs": 3}
    run(cache, tmp_path / "full", train)

    def kill_after_second(row):
        if row["epoch"] == 2:
            raise Killed  # as if the job died during epoch 3
    with pytest.raises(Killed):
        run(cache, tmp_path / "resumed", train, on_epoch_end=kill_after_second)
    assert (tmp_path / "resumed" / "state" / "last.pt").exists()
    assert not (tmp_path / "resumed" / "out" / "best.pt").exists()

    epochs_done = []
    run(cache, tmp_path / "resumed", train, on_epoch_end=lambda row: epochs_done.append(row["epoch"]))
    assert epochs_done == [3]
    assert "resuming after epoch 2" in caplog.text
    h1, o1, b1 = outputs(tmp_path / "full")
    h2, o2, b2 = outputs(tmp_path / "resumed")
    pd.testing.assert_frame_equal(h1.drop(columns=TIMING), h2.drop(columns=TIMING))
    pd.testing.assert_frame_equal(o1, o2)
    assert b1["epoch"] == b2["epoch"]
    for key, value in b1["state_dict"].items():
        assert torch.equal(value, b2["state_dict"][key]), key


def test_changed_config_does_not_resume(cache, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="deepfake_workflow")
    def kill(row):
        raise Killed
    with pytest.raises(Killed):
        run(cache, tmp_path, on_epoch_end=kill)
    epochs_done = []
    run(cache, tmp_path, {"lr": 1.0e-3}, on_epoch_end=lambda row: epochs_done.append(row["epoch"]))
    assert epochs_done == [1, 2]
    assert "belongs to another configuration; starting fresh" in caplog.text


def test_early_stopping_stops_and_keeps_best(cache, tmp_path):
    # lr 0 after warm-up: nothing improves after the first epoch
    metrics = run(cache, tmp_path, {"epochs": 6, "early_stopping_patience": 2, "lr": 1.0e-9, "ema": False})
    history, _, best = outputs(tmp_path)
    assert metrics["early_stopped"] and len(history) < 6
    assert best["epoch"] == metrics["best_epoch"] == int(history["val_auc"].idxmax()) + 1


def test_images_missing_from_cache_are_ignored_with_warning(cache, tmp_path):
    _, index, folds = cache
    extra = pd.DataFrame({"img_name": ["f" * 32 + ".jpg"], "target": [1], "fold": [0]})
    with pytest.warns(UserWarning, match="not in the cache"):
        run(cache, tmp_path, {"epochs": 1}, folds=pd.concat([folds, extra], ignore_index=True))
    _, oof, _ = outputs(tmp_path)
    assert len(oof) == (folds["fold"] == 0).sum()


def test_bad_inputs_are_clear_errors(cache, tmp_path):
    _, index, folds = cache
    with pytest.raises(ConfigError, match=r"unknown config key 'train.epoch' \(did you mean 'train.epochs'\?\)"):
        run(cache, tmp_path, {"epoch": 3})
    with pytest.raises(ConfigError, match="train.batch_size"):
        run(cache, tmp_path, {"batch_size": 0})
    with pytest.raises(ConfigError, match="train.augment.jpeg_quality"):
        run(cache, tmp_path, {"augment": {"jpeg_quality": [90, 50]}})
    with pytest.raises(ConfigError, match="fold 5"):
        run(cache, tmp_path, fold=5)
    unlabeled = folds.assign(target=folds["target"].where(folds.index != 3, -1))
    with pytest.raises(DataError, match="folds.csv"):
        run(cache, tmp_path, folds=unlabeled)
    with pytest.raises(ConfigError, match="model.name"):
        run(cache, tmp_path, model_cfg={"name": "resnet_18"})


def test_defaults_are_complete_and_valid():
    cfg = resolve_train_cfg({})
    assert set(cfg) == set(DEFAULTS) and cfg["augment"] == DEFAULTS["augment"]
    assert resolve_train_cfg({"augment": {"hflip": 0.0}})["augment"]["vflip"] == DEFAULTS["augment"]["vflip"]


# ----------------------------------------------------------------------------- augment

@pytest.fixture
def photo():
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    return np.stack([x * 8, y * 8, (x + y) * 4], axis=-1).astype(np.uint8)


def test_augment_is_deterministic_given_generator(photo):
    aug = Augmenter(TRAIN["augment"])
    batch = np.stack([photo] * 6)
    a = aug(batch, np.random.default_rng(1))
    b = aug(batch, np.random.default_rng(1))
    c = aug(batch, np.random.default_rng(2))
    assert a.dtype == np.uint8 and a.shape == batch.shape
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_flips_are_exact(photo):
    rng = np.random.default_rng(0)
    assert np.array_equal(Augmenter({"hflip": 1.0})(photo, rng), photo[:, ::-1])
    assert np.array_equal(Augmenter({"hflip": 0.0, "vflip": 1.0})(photo, rng), photo[::-1])
    # flip folded into the crop's sampling grid: with scale 1 it is the exact mirror
    flipped = Augmenter({"hflip": 1.0, "rrc_scale": [0.999999, 1.0]})(photo, rng).astype(int)
    assert np.abs(flipped - photo[:, ::-1]).max() <= 1


def test_off_means_identity_and_options_change_images(photo):
    rng = np.random.default_rng(0)
    off = Augmenter({"hflip": 0.0})
    assert not off.active and np.array_equal(off(photo, rng), photo)
    for cfg in ({"rrc_scale": [0.5, 0.6]}, {"jpeg_p": 1.0, "jpeg_quality": [10, 10]},
                {"color_jitter": 0.5}):
        out = Augmenter({"hflip": 0.0, **cfg})(photo, np.random.default_rng(3))
        assert out.shape == photo.shape and not np.array_equal(out, photo), cfg
    assert np.array_equal(Augmenter({"hflip": 0.0, "jpeg_p": 1.0, "jpeg_quality": [10, 10]})(
        photo, rng), jpeg_roundtrip(photo, 10))


def test_bad_augment_config():
    with pytest.raises(ConfigError, match="unknown config key .train.augment.rotate."):
        Augmenter({"rotate": 10})
    with pytest.raises(ConfigError, match="train.augment.hflip"):
        Augmenter({"hflip": 2})
    with pytest.raises(ConfigError, match="train.augment.rrc_scale"):
        Augmenter({"rrc_scale": [0.5]})


def test_dataset_pickles_memmap_by_reference(cache):
    """Workers started with spawn get the file location, not a copy of the array."""
    import pickle

    from deepfake_workflow.loader import CacheBatches
    images, index, _ = cache
    for array in (images, images[10:30]):
        dataset = CacheBatches(array, np.arange(len(array)))
        blob = pickle.dumps(dataset)
        assert len(blob) < array.nbytes / 4
        clone = pickle.loads(blob)
        key = (np.array([0, 3, 7]), None)
        assert torch.equal(clone[key]["images"], dataset[key]["images"])
        assert torch.equal(clone[key]["target"], torch.tensor([0, 3, 7]))
