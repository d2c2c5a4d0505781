"""Batches from the image cache: the dataset, sampler and DataLoader, and the device side.

Loading is batch-level: the sampler hands a worker a whole batch key (sorted cache
rows plus an augmentation seed), the worker reads those rows from the memmap with one
fancy-indexing call (sequential reads) and returns a uint8 (B,S,S,3) tensor. The
conversion to float and the normalisation run on the training device (`prepare_batch`),
so the host-to-device copy moves 1 byte per pixel instead of 4.
"""
from __future__ import annotations

import mmap
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .augment import Augmenter
from .crops import check_crop_size, cut, grid_origins, grid_per_side, random_origins
from .synthetic import SyntheticFakes


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
    None the fewest crops that cover each picture. With `align` > 1, corners fall on that
    grid of the original images (`shifts`: crops.picture_shifts)."""

    size: int
    boxes: np.ndarray
    per_side: int | None = None
    shifts: np.ndarray | None = None
    align: int = 1


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
        self.prepare: HostPreparation | None = None  # set by make_loader for CPU training with workers

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
            shifts = None if self.crops.shifts is None else self.crops.shifts[rows]
            origins = random_origins(boxes, self.crops.size, rng, shifts, self.crops.align)
            batch = cut(self.images, rows, origins, boxes, self.crops.size)
        else:  # scoring: a grid of crops per image
            plan = self.crops
            per_image = [grid_origins(plan.boxes[r], plan.size, plan.per_side,
                                      None if plan.shifts is None else plan.shifts[r], plan.align) for r in rows]
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
        return item if self.prepare is None else self.prepare(item)

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


@dataclass
class HostPreparation:
    """`prepare_batch` run inside the loader workers, for a model on the CPU.

    On a GPU the float conversion, augmentation and normalisation belong on the device (the
    copy moves 1 byte per pixel). With the CPU as the device they would run in the main
    process between steps, one batch at a time; in the workers they run in parallel with
    each other and with the step, on the same operations (the same float results)."""

    mean: torch.Tensor
    std: torch.Tensor
    augmenter: Augmenter | None = None
    channels_last: bool = False

    def __call__(self, item: dict) -> dict:
        x, _ = prepare_batch(item, torch.device("cpu"), self.mean, self.std, augmenter=self.augmenter,
                             channels_last=self.channels_last)
        ready = {key: value for key, value in item.items() if key not in ("images", "aug")}
        ready["x"] = x
        return ready


def make_loader(dataset: CacheBatches, plan: BatchPlan, *, num_workers: int,
                device: torch.device, prepare: HostPreparation | None = None) -> DataLoader:
    """DataLoader over whole-batch keys: pinned memory on CUDA, persistent workers.
    With `prepare`, a CPU device and workers, the workers hand over ready float batches."""
    if prepare is not None and device.type == "cpu" and num_workers > 0:
        dataset.prepare = prepare
    return DataLoader(dataset, batch_size=None, sampler=plan, num_workers=num_workers,
                      pin_memory=device.type == "cuda", persistent_workers=num_workers > 0,
                      prefetch_factor=4 if num_workers > 0 else None)


def normalisation(mean: Sequence[float], std: Sequence[float], device: torch.device):
    """(mean, std) as (1,3,1,1) float tensors on `device`, for images scaled to [0, 1]."""
    def as_tensor(values):
        return torch.tensor([float(x) for x in values], device=device).view(1, 3, 1, 1)
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


def scoring_crops(crop_size: int | None, image_size: int, boxes: np.ndarray | None, n: int,
                  per_side: int | str = "auto", shifts: np.ndarray | None = None, align: int = 1) -> CropPlan | None:
    """The crop grid that scores `n` cached images of a model trained on `crop_size` crops
    (None: the model saw whole images, no crops). `auto` covers each picture; `align` as the
    model's training crops (without `shifts` the squares count as the originals' corners)."""
    if not crop_size:
        return None
    check_crop_size(int(crop_size), image_size)
    if boxes is None:
        boxes = np.tile(np.array([0, 0, image_size, image_size], np.int64), (n, 1))
    if shifts is None:
        shifts = np.zeros((n, 2), np.int64)
    return CropPlan(size=int(crop_size), boxes=boxes, per_side=None if per_side == "auto" else int(per_side),
                    shifts=shifts, align=align)


def crops_per_image(crop_size: int | None, image_size: int) -> int:
    """At most this many crops score one image (a whole-image model: 1)."""
    return grid_per_side(image_size, int(crop_size)) ** 2 if crop_size else 1
