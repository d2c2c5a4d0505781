"""The files of a fold's training: the model checkpoint `best.pt` and the resume state `last.pt`.

Both are plain dicts of tensors and Python values written with torch.save, so that they
load with `weights_only=True` (no pickled code runs on reading).

best.pt holds the weights of the selected model and what is needed to rebuild and feed it
(CHECKPOINT_KEYS), its epoch, held-out AUC and fold, and the caller's metadata (resize mode,
crop size...) so that scoring prepares new images exactly as training did, and its provenance
(package versions, platform, device, git commit: provenance.environment()).

last.pt holds what training carries from epoch to epoch, with the fingerprint of the
configuration that produced it; a file with another fingerprint, or one that cannot be read,
is ignored and training starts fresh.
"""
from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
from torch import nn

from .atomic import atomic_path
from .errors import DataError

logger = logging.getLogger(__name__)

# what load_checkpoint needs to rebuild the model
CHECKPOINT_KEYS = ("state_dict", "model_name", "num_classes", "mean", "std", "image_size")


def save_torch_atomic(obj, path: Path) -> None:
    """torch.save through a temporary file: a crash never leaves a half-written `path`."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def cpu_state(module: nn.Module) -> dict:
    """A copy of the module's state dict on the CPU (unaffected by further training)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def save_checkpoint(path: Path, *, state_dict: dict, model_name: str, num_classes: int, mean, std,
                    image_size: int, epoch: int, val_auc: float, fold: int, pretrained,
                    meta: dict | None = None, provenance: dict | None = None) -> None:
    """Write best.pt: the weights and CHECKPOINT_KEYS, the selection figures, `meta`, then
    `provenance` (default: provenance.environment() of this process)."""
    from .provenance import environment

    save_torch_atomic({
        "state_dict": state_dict, "model_name": model_name, "num_classes": int(num_classes),
        "mean": [float(v) for v in mean], "std": [float(v) for v in std],
        "image_size": int(image_size), "epoch": int(epoch), "val_auc": float(val_auc),
        "fold": int(fold), "pretrained": str(pretrained), **(meta or {}),
        "provenance": environment() if provenance is None else provenance,
    }, path)


def load_checkpoint(path: str | os.PathLike) -> tuple[nn.Module, dict]:
    """Model (eval mode, CPU) and metadata (everything but the weights) of a best.pt."""
    from .models import create_model, set_normalisation  # timm is slow to import

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


def no_best() -> dict:
    """The selected model before any held-out evaluation: every score beats it."""
    return {"epoch": 0, "score": -math.inf, "val_auc": float("nan"), "state_dict": None, "prob": None}


@dataclass
class FoldState:
    """What a fold's training carries from epoch to epoch; last.pt stores it, one key per field.

    The training loop updates the progress fields. The training objects' states (model to
    rng_cuda, and global_step) are filled in only in the copy that is saved, and read back
    from a loaded one to resume.
    """

    epoch: int = 0  # epochs done
    model: dict | None = None
    optimizer: dict | None = None
    scheduler: dict | None = None
    ema: dict | None = None
    scaler: dict | None = None  # the fp16 gradient scaler (loss scale, growth tracker)
    global_step: int = 0
    history: list = field(default_factory=list)  # one row per epoch done
    best: dict = field(default_factory=no_best)  # epoch, score, val_auc, state_dict, prob (held-out, val_rows order)
    since_best: int = 0  # evaluations without improvement (early stopping)
    stopped: bool = False  # early-stopped
    train_seconds: float = 0.0
    train_images: int = 0
    rng_torch: torch.Tensor | None = None
    rng_cuda: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping) -> FoldState:
        """Raises KeyError when `data` lacks a field."""
        return cls(**{f.name: data[f.name] for f in fields(cls)})


def save_resume_state(path: Path, fingerprint: str, state: FoldState) -> None:
    """Write last.pt: `state` tagged with the configuration's fingerprint."""
    save_torch_atomic({"fingerprint": fingerprint, **state.to_dict()}, path)


def load_resume_state(path: Path, fingerprint: str) -> FoldState | None:
    """The state saved by save_resume_state for this fingerprint; None to start fresh."""
    if not path.is_file():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt file from a crash during an old torch.save
        logger.warning("ignoring unreadable resume state %s: %s", path, exc)
        return None
    if not isinstance(saved, dict) or saved.get("fingerprint") != fingerprint:
        logger.info("resume state %s belongs to another configuration; starting fresh", path)
        return None
    try:
        return FoldState.from_dict(saved)
    except KeyError as exc:  # written by a version that stored other fields
        logger.warning("resume state %s lacks %s; starting fresh", path, exc)
        return None
