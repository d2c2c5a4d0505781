"""Native-pixel crops (training and scoring), synthetic fakes, and sparse held-out evaluation."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from deepfake_workflow.checkpoint import load_checkpoint
from deepfake_workflow.config import validate_config
from deepfake_workflow.crops import (
    cut,
    grid_origins,
    grid_per_side,
    picture_boxes,
    picture_shifts,
    pool_crops,
    random_origins,
)
from deepfake_workflow.errors import ConfigError, DataError
from deepfake_workflow.imageio import load_rgb_and_size, picture_box
from deepfake_workflow.inference import predict_images
from deepfake_workflow.loader import CacheBatches, CropPlan
from deepfake_workflow.scoring import score_images
from deepfake_workflow.synthetic import SyntheticFakes
from deepfake_workflow.training import train_fold


@pytest.mark.parametrize("resize, w, h", [("native_crop", 50, 30), ("native_crop", 90, 70),
                                          ("letterbox", 120, 40), ("squash", 20, 90),
                                          ("center_crop", 90, 40)])
def test_picture_box_is_exactly_the_non_padded_area(tmp_path, resize, w, h):
    path = tmp_path / "white.png"
    Image.new("RGB", (w, h), (255, 255, 255)).save(path)
    array, size = load_rgb_and_size(path, 64, resize)
    x0, y0, bw, bh = picture_box(resize, *size, 64)
    inside = np.zeros((64, 64), bool)
    inside[y0:y0 + bh, x0:x0 + bw] = True
    assert (array[inside] > 0).all() and (array[~inside] == 0).all()


def test_random_crops_stay_inside_the_picture():
    boxes = np.array([[10, 20, 40, 30], [0, 0, 64, 64], [30, 30, 10, 10]])
    rng = np.random.default_rng(0)
    for _ in range(200):
        xy = random_origins(boxes, 16, rng)
        for (x, y), (bx, by, bw, bh) in zip(xy, boxes, strict=True):
            assert bx <= x <= bx + max(bw - 16, 0) and by <= y <= by + max(bh - 16, 0)


@pytest.mark.parametrize("w, h", [(77, 70), (50, 93), (64, 64), (130, 41)])
def test_aligned_crops_fall_on_the_originals_grid_in_training_and_scoring(tmp_path, w, h):
    # A picture larger than the 64 px cache on some side is centre-cropped (its pixel (0, 0)
    # lies at an odd place of the original), smaller ones are padded: crops with align 8 must
    # start on multiples of 8 of the *original* image, checked against the decoded original.
    rng = np.random.default_rng(w * h)
    original = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(original).save(tmp_path / "p.png")
    cached, (ow, oh) = load_rgb_and_size(tmp_path / "p.png", 64, "native_crop")
    index = pd.DataFrame({"orig_width": [ow], "orig_height": [oh]})
    boxes, shifts = picture_boxes(index, 64, "native_crop"), picture_shifts(index, 64, "native_crop")
    crop = 16
    origins = np.concatenate([random_origins(boxes, crop, rng, shifts, 8) for _ in range(50)]
                             + [grid_origins(boxes[0], crop, None, shifts[0], 8),
                                grid_origins(boxes[0], crop, 3, shifts[0], 8)])
    for x, y in origins:
        ox, oy = x + shifts[0, 0], y + shifts[0, 1]  # the crop's corner in the original
        assert ox % 8 == 0 and oy % 8 == 0
        piece = cut(cached[None], np.array([0]), np.array([[x, y]]), boxes, crop)[0]
        n_y, n_x = min(crop, oh - oy), min(crop, ow - ox)
        assert (piece[:n_y, :n_x] == original[oy:oy + n_y, ox:ox + n_x]).all()
    # the aligned grid still covers the picture, but for edges narrower than the grid step
    covered = np.zeros((64, 64), bool)
    for x, y in grid_origins(boxes[0], crop, None, shifts[0], 8):
        covered[y:y + crop, x:x + crop] = True
    x0, y0, bw, bh = boxes[0]
    assert covered[y0 + 7:y0 + bh - 7, x0 + 7:x0 + bw - 7].all()


def test_unaligned_crops_are_drawn_as_before_and_align_spreads_over_the_grid():
    boxes = np.array([[0, 0, 64, 64], [5, 3, 40, 50]])
    shifts = np.array([[3, 0], [0, 1]])
    a, b = np.random.default_rng(4), np.random.default_rng(4)
    assert (random_origins(boxes, 16, a) == random_origins(boxes, 16, b, shifts, 1)).all()
    xs = {int(random_origins(boxes, 16, a, shifts, 8)[0, 0]) for _ in range(300)}
    assert xs == {5, 13, 21, 29, 37, 45}  # every x with (x + 3) % 8 == 0 in [0, 48]


def test_a_crop_never_shows_padding_and_zero_fills_a_small_picture():
    images = np.zeros((2, 64, 64, 3), np.uint8)
    images[0, 10:50, 20:60] = 200  # a 40x40 picture in its padding
    images[1, 28:36, 28:36] = 200  # an 8x8 picture, smaller than the crop
    boxes = np.array([[20, 10, 40, 40], [28, 28, 8, 8]])
    rng = np.random.default_rng(1)
    crops = cut(images, np.array([0, 0, 0]), random_origins(boxes[[0, 0, 0]], 16, rng), boxes[[0, 0, 0]], 16)
    assert (crops == 200).all()
    small = cut(images, np.array([1]), random_origins(boxes[[1]], 16, rng), boxes[[1]], 16)
    assert (small[0, :8, :8] == 200).all() and small[0, 8:].sum() == 0 and small[0, :, 8:].sum() == 0


def test_the_scoring_grid_covers_the_whole_picture_with_few_crops():
    box = np.array([7, 3, 100, 61])
    origins = grid_origins(box, 32)
    assert len(origins) == grid_per_side(100, 32) * grid_per_side(61, 32) == 8
    covered = np.zeros((128, 128), bool)
    for x, y in origins:
        covered[y:y + 32, x:x + 32] = True
    assert covered[3:64, 7:107].all() and not covered[:3].any() and not covered[:, :7].any()
    assert len(grid_origins(box, 32, per_side=2)) == 4


def test_pooling_follows_one_fake_crop_more_than_the_mean():
    agree = torch.log_softmax(torch.tensor([[0.0, 1.0]] * 4), 1)
    assert torch.allclose(pool_crops(agree, [4]), agree[:1], atol=1e-6)
    one_fake = torch.log_softmax(torch.tensor([[3.0, 0.0]] * 3 + [[0.0, 5.0]]), 1)
    pooled = pool_crops(one_fake, [4]).exp()[0, 1]
    assert pooled > one_fake.exp()[:, 1].mean() and pooled < one_fake.exp()[:, 1].max()


def test_synthetic_fakes_change_only_reals_inside_their_mask():
    rng_images = np.random.default_rng(0)
    images = rng_images.integers(0, 256, (6, 48, 48, 3), dtype=np.uint8)
    targets = np.array([0, 1, 0, 1, 0, 0])
    synth = SyntheticFakes({"p": 1.0, "area": [0.1, 0.3], "feather": [0.0, 0.0], "blend": [1.0, 1.0]})
    out, out_t = synth.apply(images, targets, np.random.default_rng(5))
    assert out_t.tolist() == [1, 1, 1, 1, 1, 1]
    assert (out[targets == 1] == images[targets == 1]).all(), "fakes stay as they are"
    changed = (out != images).any(-1)[targets == 0].mean(axis=(1, 2))
    assert (changed > 0.02).all() and (changed <= 0.3 + 0.02).all()
    again, _ = synth.apply(images, targets, np.random.default_rng(5))
    assert (again == out).all(), "a batch's fakes depend only on its seed"
    none, none_t = SyntheticFakes({"p": 0.0}).apply(images, targets, np.random.default_rng(5))
    assert none is images and (none_t == targets).all()


def test_cache_batches_crop_synthesise_and_grid():
    images = np.random.default_rng(2).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    boxes = np.tile([0, 0, 64, 64], (5, 1))
    targets = np.zeros(5, np.int64)
    train = CacheBatches(images, targets, crops=CropPlan(size=24, boxes=boxes),
                         synthetic=SyntheticFakes({"p": 1.0}))
    item = train[(np.arange(5), 11)]
    assert item["images"].shape == (5, 24, 24, 3) and item["target"].tolist() == [1] * 5
    assert (train[(np.arange(5), 11)]["images"] == item["images"]).all()
    score = CacheBatches(images, targets, crops=CropPlan(size=24, boxes=boxes, per_side=3))
    grid = score[(np.array([1, 3]), None)]
    assert grid["crop_counts"] == [9, 9] and grid["images"].shape == (18, 24, 24, 3)
    assert grid["target"].tolist() == [0, 0]
    small = np.tile([20, 20, 30, 24], (5, 1))  # a 30x24 picture: 2 x 1 crops of 24 px cover it
    auto = CacheBatches(images, targets, crops=CropPlan(size=24, boxes=small))[(np.array([0, 4]), None)]
    assert auto["crop_counts"] == [2, 2]


@pytest.fixture(scope="module")
def native_cache(tmp_path_factory):
    """A native_crop-like cache: pictures of several sizes in black padding; fakes have a
    bright square somewhere in the picture (a local edit)."""
    rng = np.random.default_rng(0)
    n, size = 32, 64
    images = np.zeros((n, size, size, 3), np.uint8)
    widths, heights = rng.integers(40, 90, n), rng.integers(40, 90, n)
    target = np.arange(n) % 2
    index = pd.DataFrame({"img_name": [f"{i:032x}.jpg" for i in range(n)], "target": target,
                          "orig_width": widths, "orig_height": heights})
    for i, box in enumerate(picture_boxes(index, size, "native_crop")):
        x0, y0, w, h = box
        images[i, y0:y0 + h, x0:x0 + w] = rng.integers(0, 120, (h, w, 3))
        if target[i]:
            images[i, y0 + 2:y0 + 12, x0 + 2:x0 + 12] = 250
    folds = index[["img_name", "target"]].assign(fold=(np.arange(n) // 2) % 2)
    return images, index, folds


def test_training_on_crops_with_synthetic_fakes_and_sparse_evaluation(native_cache, tmp_path):
    images, index, folds = native_cache
    metrics = train_fold(images=images, index=index, folds=folds, fold=0,
                         model_cfg={"name": "test_resnet", "pretrained": False},
                         train_cfg={"epochs": 3, "batch_size": 8, "lr": 3.0e-3, "crop_size": 32,
                                    "eval_every": 2, "synthetic_fakes": {"p": 0.5}},
                         seed=1, out_dir=tmp_path / "out", state_dir=tmp_path / "state", progress=False,
                         resize="native_crop")
    history = pd.read_csv(tmp_path / "out/history.csv")
    assert history["val_auc"].isna().tolist() == [True, False, False]  # epochs 2 and 3 (the last)
    assert metrics["best_epoch"] in (2, 3)
    model, meta = load_checkpoint(tmp_path / "out/best.pt")
    assert meta["crop_size"] == 32 and meta["resize"] == "native_crop"
    boxes = picture_boxes(index, 64, "native_crop")
    probs = predict_images(model, meta, images, boxes=boxes, progress=False, device="cpu")
    assert probs.shape == (len(images),) and np.isfinite(probs).all()
    one_crop = predict_images(model, meta, images, boxes=boxes, crops=1, progress=False, device="cpu")
    assert not np.allclose(probs, one_crop), "the grid scores more than the one crop"


def test_a_crop_larger_than_the_cache_is_a_clear_error(native_cache, tmp_path):
    images, index, folds = native_cache
    with pytest.raises(DataError, match="crop_size 96 is larger than the cached images"):
        train_fold(images=images, index=index, folds=folds, fold=0,
                   model_cfg={"name": "test_resnet", "pretrained": False},
                   train_cfg={"epochs": 1, "batch_size": 8, "crop_size": 96},
                   seed=1, out_dir=tmp_path / "out", state_dir=tmp_path / "state", progress=False)


def test_a_model_trained_on_aligned_crops_scores_files_as_the_workflow_does(native_cache, tmp_path):
    # The score command decodes files itself: it must put the crops on the same grid of the
    # originals as training and the predict stage (picture_shifts), or the scores differ.
    images, index, folds = native_cache
    train_fold(images=images, index=index, folds=folds, fold=0,
               model_cfg={"name": "test_resnet", "pretrained": False},
               train_cfg={"epochs": 1, "batch_size": 8, "crop_size": 32, "crop_align": 8},
               seed=1, out_dir=tmp_path / "out", state_dir=tmp_path / "state", progress=False,
               resize="native_crop")
    model, meta = load_checkpoint(tmp_path / "out/best.pt")
    assert meta["crop_align"] == 8
    rng = np.random.default_rng(3)
    paths = []
    for i, (w, h) in enumerate([(77, 70), (130, 41), (50, 93)]):  # odd centre crops and padding
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(paths[-1])
    decoded = [load_rgb_and_size(p, 64, "native_crop") for p in paths]
    cached = np.stack([array for array, _ in decoded])
    sizes = pd.DataFrame([size for _, size in decoded], columns=["orig_width", "orig_height"])
    expected = predict_images(model, meta, cached, boxes=picture_boxes(sizes, 64, "native_crop"),
                              shifts=picture_shifts(sizes, 64, "native_crop"), progress=False, device="cpu")
    scored = score_images(paths, [tmp_path / "out/best.pt"], device="cpu")
    assert np.allclose(scored.scores["y_pred"].to_numpy(), expected, atol=1e-6)


def test_crop_align_needs_a_crop_size_on_its_grid_and_is_ignored_without_native_pixels(native_cache, tmp_path):
    images, index, folds = native_cache
    with pytest.raises(ConfigError, match="train.crop_align.*not a multiple"):
        validate_config({"train": {"crop_size": 36, "crop_align": 8}})
    validate_config({"train": {"crop_size": None, "crop_align": 8}})  # whole images: nothing to align
    train_fold(images=images, index=index, folds=folds, fold=0,
               model_cfg={"name": "test_resnet", "pretrained": False},
               train_cfg={"epochs": 1, "batch_size": 8, "crop_size": 32, "crop_align": 8},
               seed=1, out_dir=tmp_path / "out", state_dir=tmp_path / "state", progress=False, resize="squash")
    _, meta = load_checkpoint(tmp_path / "out/best.pt")
    assert meta["crop_align"] == 1  # a resampled cache has no grid of the originals: scored unaligned too
