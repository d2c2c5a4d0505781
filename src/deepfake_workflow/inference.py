"""Predictions of a trained model: precision, the forward pass with optional TTA, and
P(fake) for an array of cached images. The batches come from loader.py.
"""
from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .config import schema_choices
from .crops import pool_crops
from .devices import resolve_device
from .errors import ConfigError, DataError
from .loader import (
    BatchPlan,
    CacheBatches,
    HostPreparation,
    crops_per_image,
    make_loader,
    normalisation,
    prepare_batch,
    scoring_crops,
    sequential_keys,
)

PRECISIONS = schema_choices("train.precision")
TTA_CHOICES = schema_choices("predict.tta")


def native_bf16(device: torch.device) -> bool:
    """True on a CUDA GPU with native bfloat16 (Ampere and later), not emulated."""
    if device.type != "cuda":
        return False
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # an older torch without the argument
        return torch.cuda.is_bf16_supported()


def resolve_precision(precision: str, device: torch.device, key: str = "train.precision", *,
                      bf16_ok: bool | None = None) -> str:
    """'auto' -> bf16 on a CUDA GPU with native bf16, fp16 on other CUDA GPUs, fp32 elsewhere.
    `bf16_ok` overrides the GPU's answer (tests)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"{key}: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if (native_bf16(device) if bf16_ok is None else bf16_ok) else "fp16"
    return precision


AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, precision: str):
    """Mixed-precision context for the forward pass ('fp32' = a no-op)."""
    if precision in AUTOCAST_DTYPES:
        return torch.autocast(device_type=device.type, dtype=AUTOCAST_DTYPES[precision])
    return contextlib.nullcontext()


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """Loss scaling for fp16 (whose gradients underflow without it); a pass-through otherwise."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


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


def predict_images(model: nn.Module, meta: dict, images: np.ndarray, *, batch_size: int = 64,
                   tta: str = "none", device: str = "auto", num_workers: int = 0,
                   precision: str = "auto", progress: bool = True, boxes: np.ndarray | None = None,
                   crops: int | str = "auto", shifts: np.ndarray | None = None) -> np.ndarray:
    """P(fake) as float64 in [0, 1] for every image of a uint8 (N,S,S,3) array.

    A model trained on crops (`meta["crop_size"]`) scores a grid of crops per image, inside
    `boxes` (where each picture lies in its square; None = the whole square); `crops` is
    the grid's crops per side (`auto`: enough to cover the picture); with the model's
    `crop_align`, crops fall on that grid of the originals (`shifts`: crops.picture_shifts).
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
    plan_crops = scoring_crops(meta.get("crop_size"), images.shape[1], boxes, len(images), crops,
                               shifts, meta.get("crop_align", 1))
    most = crops_per_image(meta.get("crop_size"), images.shape[1]) if crops == "auto" else int(crops) ** 2
    per_batch = batch_size if plan_crops is None else max(1, batch_size // most)
    plan = BatchPlan(sequential_keys(np.arange(len(images)), per_batch))
    loader = make_loader(CacheBatches(images, crops=plan_crops), plan, num_workers=num_workers, device=dev,
                         prepare=HostPreparation(mean, std, channels_last=channels_last))
    log_p, rows = predict_log_probs(model, loader, device=dev, mean=mean, std=std, precision=prec,
                                    channels_last=channels_last, tta=tta, total=len(plan),
                                    progress=progress)
    probs = np.empty(len(images), dtype=np.float64)
    probs[rows] = np.exp(log_p[:, 1])
    return np.clip(probs, 0.0, 1.0)
