"""Batches from the image cache, and predictions of a trained checkpoint.

Loading is batch-level: the sampler hands a worker a whole batch key (sorted cache
rows plus an augmentation seed), the worker reads those rows from the memmap with one
fancy-indexing call (sequential reads) and returns a uint8 (B,S,S,3) tensor. The
conversion to float and the normalisation run on the training device, so the
host-to-device copy moves 1 byte per pixel instead of 4.
"""
from __future__ import annotations

import contextlib
import mmap
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from .augment import Augmenter
from .config import schema_choices
from .crops import check_crop_size, cut, grid_origins, grid_per_side, pool_crops, random_origins
from .synthetic import SyntheticFakes
from .devices import resolve_device
from .errors import ConfigError, DataError

PRECISIONS = schema_choices("train.precision")
TTA_CHOICES = schema_choices("predict.tta")
CHECKPOINT_KEYS = ("state_dict", "model_name", "num_classes", "mean", "std", "image_size")


def resolve_precision(precision: str, device: torch.device, key: str = "train.precision") -> str:
    """'auto' -> bf16 on CUDA, fp32 elsewhere."""
    if precision not in PRECISIONS:
        raise ConfigError(f"{key}: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def autocast(device: torch.device, precision: str):
    """Mixed-precision context for the forward pass ('fp32' = a no-op)."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _memmap_location(images: np.ndarray) -> dict | None:
    """File, offset, shape of a C-contiguous memmap, so a worker started with spawn
    can map the file again instead of receiving a pickled copy of the whole array."""
    if not isinstance(images, np.memmap) or not images.filename or not images.flags.c_contiguous:
        return None
    base = getattr(images, "_mmap", None)
    if not isinstance(base, mmap.mmap):
        return None
    # numpy maps from the allocation boundary below the offset; slices inherit the
    # parent's offset attribute, so compute the real file offset from addresses.
    map_start = images.offset - images.offset % mmap.ALLOCATIONGRANULARITY
    address = np.frombuffer(base, dtype=np.uint8).ctypes.data
    offset = map_start + images.ctypes.data - address
    return {"filename": images.filename, "offset": offset, "shape": images.shape,
            "dtype": images.dtype.str}


@dataclass
class CropPlan:
    """Native-pixel crops of `size` px inside `boxes` (where each picture lies in its cached
    square; see crops.picture_boxes): one random crop per image for a batch with a seed
    (training), else a grid per image (scoring): `per_side` x `per_side` crops, or with
    None the fewest crops that cover each picture."""

    size: int
    boxes: np.ndarray
    per_side: int | None = None


class CacheBatches(Dataset):
    """Map-style dataset whose items are whole batches.

    A key is `(rows, seed)`: cache row numbers (sorted, for sequential memmap reads)
    and the seed of the batch's random draws (None = no augmentation; with a crop plan,
    the grid of crops). An item is a dict: images uint8 (B,S,S,3), target int64 (B,),
    rows int64 (B,), `aug` (the random parameters, applied on the device) when augmenting,
    and `crop_counts` (crops per image) when each image is scored as a grid of crops.
    Synthetic fakes, when on, turn some real images of a seeded batch into fakes (target 1).
    """

    def __init__(self, images: np.ndarray, targets: np.ndarray | None = None,
                 augmenter: Augmenter | None = None, crops: CropPlan | None = None,
                 synthetic: SyntheticFakes | None = None):
        self.images = images
        self.targets = np.zeros(len(images), np.int64) if targets is None else np.asarray(targets, np.int64)
        self.augmenter = augmenter if augmenter is not None and augmenter.active else None
        self.crops = crops
        self.synthetic = synthetic if synthetic is not None and synthetic.active else None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key):
        rows, seed = key
        target = self.targets[rows]
        item = {"rows": torch.from_numpy(rows)}
        rng = np.random.default_rng(seed) if seed is not None else None
        if self.crops is None:
            batch = np.ascontiguousarray(self.images[rows])
        elif rng is not None:  # training: one random crop per image, drawn first
            boxes = self.crops.boxes[rows]
            batch = cut(self.images, rows, random_origins(boxes, self.crops.size, rng), boxes, self.crops.size)
        else:  # scoring: a grid of crops per image
            per_image = [grid_origins(self.crops.boxes[r], self.crops.size, self.crops.per_side) for r in rows]
            counts = [len(o) for o in per_image]
            batch = cut(self.images, np.repeat(rows, counts), np.concatenate(per_image),
                        np.repeat(self.crops.boxes[rows], counts, axis=0), self.crops.size)
            item["crop_counts"] = counts
        if rng is not None and self.synthetic is not None:
            batch, target = self.synthetic.apply(batch, target, rng)
        if rng is not None and self.augmenter is not None:
            params = self.augmenter.sample(len(rows), rng)
            batch = self.augmenter.apply_uint8(batch, params)
            item["aug"] = {k: torch.from_numpy(v) for k, v in params.items()}
        item["images"] = torch.from_numpy(batch)
        item["target"] = torch.from_numpy(np.ascontiguousarray(target))
        return item

    def __getstate__(self):
        state = self.__dict__.copy()
        location = _memmap_location(self.images)
        if location is not None:
            state["images"], state["_memmap"] = None, location
        return state

    def __setstate__(self, state):
        location = state.pop("_memmap", None)
        self.__dict__.update(state)
        if location is not None:
            self.images = np.memmap(location["filename"], dtype=np.dtype(location["dtype"]), mode="r",
                                    offset=location["offset"], shape=tuple(location["shape"]))


class BatchPlan(Sampler):
    """Yields the batch keys of the current epoch; `keys` is replaced between epochs
    (the sampler lives in the main process, so persistent workers see the change)."""

    def __init__(self, keys: Sequence = ()):
        self.keys = list(keys)

    def __iter__(self):
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)


def sequential_keys(rows: np.ndarray, batch_size: int) -> list:
    """Batch keys covering `rows` in order, without augmentation."""
    rows = np.asarray(rows, dtype=np.int64)
    return [(np.sort(rows[i:i + batch_size]), None) for i in range(0, len(rows), batch_size)]


def make_loader(dataset: CacheBatches, plan: BatchPlan, *, num_workers: int,
                device: torch.device) -> DataLoader:
    """DataLoader over whole-batch keys: pinned memory on CUDA, persistent workers."""
    return DataLoader(dataset, batch_size=None, sampler=plan, num_workers=num_workers,
                      pin_memory=device.type == "cuda", persistent_workers=num_workers > 0,
                      prefetch_factor=4 if num_workers > 0 else None)


def normalisation(mean: Sequence[float], std: Sequence[float], device: torch.device):
    """(mean, std) as (1,3,1,1) float tensors on `device`, for images scaled to [0, 1]."""
    as_tensor = lambda v: torch.tensor([float(x) for x in v], device=device).view(1, 3, 1, 1)
    return as_tensor(mean), as_tensor(std)


def prepare_batch(batch: dict, device: torch.device, mean: torch.Tensor, std: torch.Tensor, *,
                  augmenter: Augmenter | None = None, channels_last: bool = False):
    """uint8 (B,S,S,3) host batch -> normalised float (B,3,S,S) and targets on `device`.
    A batch that already holds `x` (a ready-made float tensor) is passed through."""
    target = batch["target"].to(device, non_blocking=True)
    if "x" in batch:
        return batch["x"], target
    # NHWC uint8 permuted to NCHW *is* channels_last in memory: no copy needed for it.
    x = batch["images"].to(device, non_blocking=True).permute(0, 3, 1, 2).float()
    if augmenter is not None and "aug" in batch:
        x = augmenter.apply_tensor(x.div_(255), batch["aug"])
        x = (x - mean) / std
    else:
        x = (x - mean * 255) / (std * 255)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    return x.contiguous(memory_format=memory_format), target


@torch.no_grad()
def predict_log_probs(model: nn.Module, batches: Iterable, *, device: torch.device,
                      mean: torch.Tensor, std: torch.Tensor, precision: str = "fp32",
                      channels_last: bool = False, tta: str = "none", total: int | None = None,
                      progress: bool = False, desc: str = "predict") -> tuple[np.ndarray, np.ndarray]:
    """Log-probabilities (N,C) float64 and the cache rows (N,) of every batch, in order.
    With tta='hflip' the probabilities of the image and its mirror are averaged; a batch of
    crop grids (`crop_counts`) is pooled to one score per image (crops.pool_crops)."""
    if tta not in TTA_CHOICES:
        raise ConfigError(f"predict.tta: expected one of {', '.join(TTA_CHOICES)}, got {tta!r}")
    model.eval()
    outputs, rows = [], []
    for batch in tqdm(batches, total=total, desc=desc, disable=not progress, leave=False):
        x, _ = prepare_batch(batch, device, mean, std, channels_last=channels_last)
        with autocast(device, precision):
            log_p = torch.log_softmax(model(x).float(), dim=1)
            if tta == "hflip":
                flipped = torch.log_softmax(model(x.flip(3)).float(), dim=1)
                log_p = torch.logsumexp(torch.stack([log_p, flipped]), dim=0) - np.log(2.0)
        log_p = pool_crops(log_p, batch.get("crop_counts"))
        outputs.append(log_p.double().cpu())
        rows.append(batch["rows"])
    if not outputs:
        return np.zeros((0, 2)), np.zeros(0, np.int64)
    return torch.cat(outputs).numpy(), torch.cat(rows).numpy()


def load_checkpoint(path: str | os.PathLike) -> tuple[nn.Module, dict]:
    """Model (eval mode, CPU) and metadata of a `best.pt` written by train_fold."""
    from .models import create_model, set_normalisation

    path = Path(path)
    if not path.is_file():
        raise DataError(f"checkpoint {str(path)!r} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(f"checkpoint {str(path)!r} cannot be read: {exc}") from exc
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise DataError(f"checkpoint {str(path)!r} lacks {', '.join(missing)}: not written by train_fold?")
    model = create_model(ckpt["model_name"], pretrained=False, num_classes=int(ckpt["num_classes"]))
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise DataError(f"checkpoint {str(path)!r} does not fit model {ckpt['model_name']!r}: {exc}") from exc
    set_normalisation(model, ckpt["mean"], ckpt["std"])
    model.eval()
    meta = {k: v for k, v in ckpt.items() if k != "state_dict"}
    return model, meta


def scoring_crops(crop_size: int | None, image_size: int, boxes: np.ndarray | None, n: int,
                  per_side: int | str = "auto") -> CropPlan | None:
    """The crop grid that scores `n` cached images of a model trained on `crop_size` crops
    (None: the model saw whole images, no crops). `auto` covers each picture."""
    if not crop_size:
        return None
    check_crop_size(int(crop_size), image_size)
    if boxes is None:
        boxes = np.tile(np.array([0, 0, image_size, image_size], np.int64), (n, 1))
    return CropPlan(size=int(crop_size), boxes=boxes, per_side=None if per_side == "auto" else int(per_side))


def crops_per_image(crop_size: int | None, image_size: int) -> int:
    """At most this many crops score one image (a whole-image model: 1)."""
    return grid_per_side(image_size, int(crop_size)) ** 2 if crop_size else 1


def predict_images(model: nn.Module, meta: dict, images: np.ndarray, *, batch_size: int = 64,
                   tta: str = "none", device: str = "auto", num_workers: int = 0,
                   precision: str = "auto", progress: bool = True, boxes: np.ndarray | None = None,
                   crops: int | str = "auto") -> np.ndarray:
    """P(fake) as float64 in [0, 1] for every image of a uint8 (N,S,S,3) array.

    A model trained on crops (`meta["crop_size"]`) scores a grid of crops per image, inside
    `boxes` (where each picture lies in its square; None = the whole square); `crops` is
    the grid's crops per side (`auto`: enough to cover the picture).
    """
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise DataError(f"images: expected uint8 (N,S,S,3), got {images.dtype} {images.shape}")
    if images.shape[1] != meta.get("image_size", images.shape[1]):
        warnings.warn(f"images are {images.shape[1]} px, the model was trained on "
                      f"{meta['image_size']} px", stacklevel=2)
    dev = resolve_device(device, key="predict.device")
    prec = resolve_precision(precision, dev, key="predict.precision")
    channels_last = True  # faster with cuDNN and with oneDNN (CPU) alike
    model = model.to(dev, memory_format=torch.channels_last)
    mean, std = normalisation(meta["mean"], meta["std"], dev)
    plan_crops = scoring_crops(meta.get("crop_size"), images.shape[1], boxes, len(images), crops)
    most = crops_per_image(meta.get("crop_size"), images.shape[1]) if crops == "auto" else int(crops) ** 2
    per_batch = batch_size if plan_crops is None else max(1, batch_size // most)
    plan = BatchPlan(sequential_keys(np.arange(len(images)), per_batch))
    loader = make_loader(CacheBatches(images, crops=plan_crops), plan, num_workers=num_workers, device=dev)
    log_p, rows = predict_log_probs(model, loader, device=dev, mean=mean, std=std, precision=prec,
                                    channels_last=channels_last, tta=tta, total=len(plan),
                                    progress=progress)
    probs = np.empty(len(images), dtype=np.float64)
    probs[rows] = np.exp(log_p[:, 1])
    return np.clip(probs, 0.0, 1.0)
