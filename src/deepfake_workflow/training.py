"""Training of one cross-validation fold, resumable and reproducible.

Randomness is derived per epoch from (seed, fold, epoch): the shuffle, every batch's
augmentation seed and the torch RNG (dropout, drop-path) are re-seeded at the start of
each epoch. A run resumed from `last.pt` therefore continues exactly as an
uninterrupted run would, and the number of loader workers does not change results.

With train.devices > 1 the fold trains in that many processes (distributed.py): each takes its
share of every batch of the same plan (rank_keys) and draws from seeds that also depend on its rank.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from . import distributed
from .atomic import write_csv, write_json
from .augment import Augmenter
from .checkpoint import FoldState, cpu_state, load_resume_state, save_checkpoint, save_resume_state
from .config import section_defaults, validate_section
from .crops import check_crop_size, picture_boxes, picture_shifts
from .devices import resolve_device
from .distributed import Ranks
from .errors import ConfigError, DataError
from .inference import autocast, grad_scaler, predict_log_probs, resolve_precision
from .loader import (
    BatchPlan,
    CacheBatches,
    CropPlan,
    HostPreparation,
    crops_per_image,
    make_loader,
    normalisation,
    prepare_batch,
    sequential_keys,
)
from .models import create_model, data_config
from .provenance import environment
from .synthetic import SyntheticFakes
from .tables import require_columns

logger = logging.getLogger(__name__)

DEFAULTS = section_defaults("train")  # from the config schema: one place for defaults
NUM_CLASSES = 2  # real, fake
HISTORY_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_auc", "lr",
                   "images_per_s", "epoch_seconds"]
# Keys that change speed but not results: a run may resume with other values.
_NOT_FINGERPRINTED = ("num_workers",)


# ----------------------------------------------------------------------------- config

def resolve_train_cfg(train_cfg: dict | None) -> dict:
    """`train_cfg` checked against the config schema, defaults filled in."""
    cfg = validate_section("train", train_cfg)
    Augmenter(cfg["augment"])
    SyntheticFakes(cfg["synthetic_fakes"])
    return cfg


# ----------------------------------------------------------------------------- data

def select_fold_rows(index: pd.DataFrame, folds: pd.DataFrame, fold: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cache rows for training (fold != `fold`) and held-out (fold == `fold`), and the
    0/1 target of every cache row (-1 where unused). Names in folds.csv that are not
    in the cache (images skipped as unreadable) are dropped with a warning."""
    require_columns(index, ("img_name", "target"), "index.csv")
    require_columns(folds, ("img_name", "target", "fold"), "folds.csv")
    fold_ids = sorted(pd.unique(folds["fold"]).tolist())
    if fold not in fold_ids:
        raise ConfigError(f"fold {fold} is not in folds.csv (folds there: {fold_ids})")

    position = pd.Series(np.arange(len(index)), index=index["img_name"].to_numpy())
    in_cache = folds["img_name"].isin(position.index)
    if not in_cache.all():
        absent = folds.loc[~in_cache, "img_name"]
        warnings.warn(f"{len(absent)} image(s) of folds.csv are not in the cache and are ignored "
                      f"(e.g. {absent.iloc[0]})", stacklevel=3)
    used = folds[in_cache]
    rows = position.loc[used["img_name"]].to_numpy()
    cache_target = index["target"].to_numpy()[rows]
    fold_target = used["target"].to_numpy()
    mismatch = np.flatnonzero(cache_target != fold_target)
    if len(mismatch):
        raise DataError(f"folds.csv: target of {used['img_name'].iloc[mismatch[0]]} is "
                        f"{fold_target[mismatch[0]]} but the cache index says {cache_target[mismatch[0]]}")
    bad = np.flatnonzero(~np.isin(fold_target, (0, 1)))
    if len(bad):
        raise DataError(f"folds.csv: {used['img_name'].iloc[bad[0]]} has target "
                        f"{fold_target[bad[0]]}; training needs 0 (real) or 1 (fake)")
    held = used["fold"].to_numpy() == fold
    train_rows, val_rows = np.sort(rows[~held]), np.sort(rows[held])
    if len(train_rows) == 0 or len(val_rows) == 0:
        raise DataError(f"fold {fold}: {len(train_rows)} training and {len(val_rows)} held-out "
                        f"images in the cache; both must be non-empty")
    targets = np.full(len(index), -1, dtype=np.int64)
    targets[rows] = fold_target
    return train_rows, val_rows, targets


def derive_seed(*parts: int) -> int:
    """A 32-bit seed that depends on all `parts` (seed, fold, epoch, purpose...)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def epoch_keys(train_rows: np.ndarray, batch_size: int, *, seed: int, fold: int, epoch: int,
               max_batches: int | None, augment: bool) -> list:
    """Shuffled batch keys of one epoch. The last incomplete batch is dropped (a batch
    of one breaks BatchNorm) unless it is the only one. `augment`: each batch gets the seed
    of its random draws (crops, synthetic fakes, augmentation)."""
    order = np.random.default_rng(derive_seed(seed, fold, epoch, 1)).permutation(train_rows)
    n_batches = max(1, len(order) // batch_size)
    if max_batches is not None:
        n_batches = min(n_batches, max_batches)
    keys = []
    for b in range(n_batches):
        rows = np.sort(order[b * batch_size:(b + 1) * batch_size])
        keys.append((rows, derive_seed(seed, fold, epoch, 2, b) if augment else None))
    return keys


def rank_keys(keys: list, ranks: Ranks) -> list:
    """This process's share of every batch of the epoch's plan (`keys`, the same on every process):
    rows rank, rank + world, ... of each batch, so the shares of one batch are disjoint, the same
    size when world divides the batch, and together the batch itself. train.batch_size is thus
    the global batch of one optimisation step, whatever train.devices. Each share draws its random
    numbers from its own seed (derived from the batch's); one process keeps `keys` as they are."""
    if ranks.world == 1:
        return keys
    return [(rows[ranks.rank::ranks.world], None if seed is None else derive_seed(seed, ranks.rank))
            for rows, seed in keys]


# ----------------------------------------------------------------------------- steps

@dataclass
class StepContext:
    """Everything one optimisation step needs."""
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    ema: object | None
    criterion: nn.Module
    device: torch.device
    precision: str
    channels_last: bool
    mean: torch.Tensor
    std: torch.Tensor
    augmenter: Augmenter | None
    scaler: torch.amp.GradScaler | None = None  # None: a pass-through (not fp16)
    grad_clip: float | None = None
    net: nn.Module | None = None  # what a training step runs: the model, or its DistributedDataParallel wrapper
    forward: Callable | None = None  # `net`, or its torch.compile'd forward
    compile_proven: bool = False  # the compiled forward and backward have run once
    global_step: int = 0

    def __post_init__(self):
        if self.scaler is None:
            self.scaler = grad_scaler(self.device, "fp32")
        if self.net is None:
            self.net = self.model
        if self.forward is None:
            self.forward = self.net

    @property
    def compiled(self) -> bool:
        return self.forward is not self.net

    @property
    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model


def cosine_with_warmup(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """LR factor per step: linear ramp over `warmup_steps`, then cosine down to 0."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


def make_step_context(model: nn.Module, cfg: dict, device: torch.device, steps_per_epoch: int) -> StepContext:
    """Optimizer (AdamW, no decay on norms/biases), schedule, EMA and loss for `model`."""
    precision = resolve_precision(cfg["precision"], device)
    # channels_last: faster convolutions with cuDNN and with oneDNN on the CPU alike
    # (efficientnet_lite0, 128 px, CPU: 1.2 s vs 1.8 s per batch of 32)
    channels_last = True if cfg["channels_last"] == "auto" else bool(cfg["channels_last"])
    model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg["weight_decay"]},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg["lr"])
    total = cfg["epochs"] * steps_per_epoch
    warmup = min(total, round(cfg["warmup_epochs"] * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_with_warmup(total, warmup))
    ema = None
    if cfg["ema"]:
        from timm.utils import ModelEmaV3
        # warm-up keeps early EMA weights from being dominated by the initial ones
        ema = ModelEmaV3(model, decay=cfg["ema_decay"], use_warmup=True)
    norm = data_config(model)
    mean, std = normalisation(norm["mean"], norm["std"], device)
    augmenter = Augmenter(cfg["augment"])
    net = distributed.data_parallel(model, device)
    return StepContext(model=model, optimizer=optimizer, scheduler=scheduler, ema=ema,
                       criterion=nn.CrossEntropyLoss(label_smoothing=cfg["label_smoothing"]),
                       device=device, precision=precision, channels_last=channels_last,
                       mean=mean, std=std, augmenter=augmenter if augmenter.active else None,
                       scaler=grad_scaler(device, precision), grad_clip=cfg["grad_clip"], net=net,
                       forward=compile_forward(net) if cfg["compile"] else net)


def compile_forward(model: nn.Module) -> Callable:
    """torch.compile(model), or `model` itself (with one warning) when compiling fails here.
    The model keeps its own parameters and state-dict keys: checkpoints are unchanged."""
    try:
        return torch.compile(model)
    except Exception as exc:
        _compile_failed(exc)
        return model


def _compile_failed(exc: BaseException) -> None:
    first_line = (str(exc).strip().splitlines() or [""])[0][:200]
    logger.warning("train.compile: torch.compile failed (%s: %s); training continues uncompiled (eager)",
                   type(exc).__name__, first_line)


def _forward_backward_step(ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward, loss, backward, optional clipping and the optimizer step; (logits, loss)."""
    with autocast(ctx.device, ctx.precision):
        logits = ctx.forward(x)
    loss = ctx.criterion(logits.float(), y)
    ctx.optimizer.zero_grad(set_to_none=True)
    ctx.scaler.scale(loss).backward()  # scale: fp16 only, else the loss as it is
    if ctx.grad_clip is not None:
        ctx.scaler.unscale_(ctx.optimizer)  # clip the true gradients, not the scaled ones
        torch.nn.utils.clip_grad_norm_(ctx.model.parameters(), ctx.grad_clip)
    ctx.scaler.step(ctx.optimizer)  # fp16: skipped when a gradient overflowed
    ctx.scaler.update()
    return logits, loss


def training_step(ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step. A compiled forward compiles on its first call (and its backward on
    the first backward): if that fails, warn once and redo the step uncompiled."""
    if not ctx.compiled:
        return _forward_backward_step(ctx, x, y)
    try:
        result = _forward_backward_step(ctx, x, y)
    except Exception as exc:
        if ctx.compile_proven:
            raise
        _compile_failed(exc)
        ctx.forward = ctx.net
        return _forward_backward_step(ctx, x, y)
    ctx.compile_proven = True
    return result


def train_one_epoch(ctx: StepContext, batches: Iterable, *, total: int | None = None,
                    progress: bool = False, desc: str = "train") -> dict:
    """One pass over `batches` (loader batches, or dicts with a ready `x` tensor).
    Returns loss, accuracy, images seen (by all processes), seconds and the last learning rate."""
    ctx.model.train()
    loss_sum = torch.zeros((), device=ctx.device, dtype=torch.float64)
    correct = torch.zeros((), device=ctx.device, dtype=torch.int64)
    seen, lr = 0, float("nan")
    start = time.perf_counter()
    bar = tqdm(batches, total=total, desc=desc, disable=not progress, leave=False, file=sys.stderr)
    for step, batch in enumerate(bar):
        x, y = prepare_batch(batch, ctx.device, ctx.mean, ctx.std, augmenter=ctx.augmenter,
                             channels_last=ctx.channels_last)
        lr = ctx.optimizer.param_groups[0]["lr"]
        logits, loss = training_step(ctx, x, y)
        ctx.scheduler.step()
        ctx.global_step += 1
        if ctx.ema is not None:
            ctx.ema.update(ctx.model, step=ctx.global_step)
        # accumulate on the device: no host sync per step
        loss_sum += loss.detach().double() * len(y)
        correct += (logits.detach().argmax(1) == y).sum()
        seen += len(y)
        if progress and step % 10 == 0:
            bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}", lr=f"{lr:.2e}")
    totals = distributed.all_sum(torch.stack([loss_sum, correct.double(),
                                              torch.tensor(seen, dtype=torch.float64, device=ctx.device)]))
    loss_total, correct_total, seen = totals.tolist()
    seen = int(seen)
    mean_loss, accuracy = (loss_total / seen, correct_total / seen) if seen else (float("nan"),) * 2
    if ctx.device.type == "cuda":
        torch.cuda.synchronize(ctx.device)
    return {"loss": mean_loss, "acc": accuracy, "images": seen,
            "seconds": time.perf_counter() - start, "lr": lr}


def evaluate(ctx: StepContext, loader, plan_len: int, targets: np.ndarray, *, progress: bool) -> dict | None:
    """Loss, accuracy and ROC AUC of the evaluation model on the held-out batches. With several
    processes, each scores its share of the batches and rank 0 gets all scores and computes the
    metrics once (the others get None)."""
    from sklearn.metrics import roc_auc_score

    distributed.share_buffers(ctx.eval_model)
    log_p, rows = predict_log_probs(ctx.eval_model, loader, device=ctx.device, mean=ctx.mean,
                                    std=ctx.std, precision=ctx.precision,
                                    channels_last=ctx.channels_last, total=plan_len,
                                    progress=progress, desc="validate")
    shares = distributed.gather_to_main((log_p, rows))
    if shares is None:
        return None
    log_p, rows = np.concatenate([s[0] for s in shares]), np.concatenate([s[1] for s in shares])
    y = targets[rows]
    loss = float(-log_p[np.arange(len(y)), y].mean())
    acc = float((log_p.argmax(1) == y).mean())
    auc = float(roc_auc_score(y, log_p[:, 1])) if len(np.unique(y)) == 2 else float("nan")
    return {"loss": loss, "acc": acc, "auc": auc, "rows": rows, "prob": np.exp(log_p[:, 1])}


# ----------------------------------------------------------------------------- state

def fingerprint(model_cfg: dict, cfg: dict, seed: int, fold: int, images_shape, train_rows, val_rows,
                targets, resize: str = "squash") -> str:
    """Hash of everything that determines the result of a fold's training."""
    relevant = {k: v for k, v in cfg.items() if k not in _NOT_FINGERPRINTED}
    rows = hashlib.sha256()
    for array in (train_rows, val_rows, targets[train_rows], targets[val_rows]):
        rows.update(np.ascontiguousarray(array, dtype=np.int64).tobytes())
    blob = json.dumps({"model": model_cfg, "train": relevant, "seed": seed, "fold": fold, "resize": resize,
                       "shape": list(images_shape), "rows": rows.hexdigest()},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


# ----------------------------------------------------------------------------- driver

@dataclass
class FoldRun:
    """The fixed inputs of one fold's training, as train_fold checked and derived them."""
    images: np.ndarray
    index: pd.DataFrame
    fold: int
    seed: int
    model_cfg: dict
    cfg: dict  # the resolved train section
    out_dir: Path
    resume_path: Path  # last.pt
    fingerprint: str
    train_rows: np.ndarray
    val_rows: np.ndarray
    targets: np.ndarray  # 0/1 per cache row, -1 where unused
    device: torch.device
    progress: bool
    on_epoch_end: Callable[[dict], None] | None
    checkpoint_meta: dict  # stored in best.pt: resize, crop_size and the caller's values
    ranks: Ranks = Ranks()  # this process among those training the fold (train.devices)


def train_fold(*, images: np.ndarray, index: pd.DataFrame, folds: pd.DataFrame, fold: int,
               model_cfg: dict, train_cfg: dict, seed: int, out_dir: Path, state_dir: Path,
               progress: bool = True, on_epoch_end: Callable[[dict], None] | None = None,
               resize: str = "squash", checkpoint_meta: dict | None = None) -> dict:
    """Train one fold; write best.pt, history.csv, oof.csv and metrics.json to `out_dir`.

    `resize` is the cache's resize mode (where each picture lies in its square, for crops).
    It, the crop size and `checkpoint_meta` (plain values) are stored in best.pt so that
    scoring new images later prepares them exactly as training did.

    `state_dir/last.pt` is written after every epoch and picked up on the next call with
    the same configuration, which resumes from the next epoch; it is deleted once the
    outputs are written. `on_epoch_end(history_row)` is called after each epoch's state
    is saved. Returns the fold metrics (also in metrics.json).

    With train.devices N > 1 this runs in each of N processes of a process group (see
    distributed.py; scripts/train.py starts them): rank 0 alone writes the files above, logs
    progress and calls `on_epoch_end`; every process resumes from rank 0's last.pt and returns
    the metrics.
    """
    cfg = resolve_train_cfg(train_cfg)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed: expected an integer >= 0, got {seed!r}")
    if "name" not in model_cfg:
        raise ConfigError("model.name: missing")
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8 or images.shape[1] != images.shape[2]:
        raise DataError(f"images.npy: expected uint8 (N,S,S,3), got {images.dtype} {images.shape}")
    if len(index) != len(images):
        raise DataError(f"index.csv has {len(index)} rows but images.npy holds {len(images)} images")
    ranks = distributed.current()
    if cfg["devices"] != ranks.world:
        raise ConfigError(f"train.devices is {cfg['devices']} but {ranks.world} process(es) train this fold: "
                          f"run scripts/train.py, which starts train.devices processes with torchrun")
    train_rows, val_rows, targets = select_fold_rows(index, folds, fold)
    device = resolve_device(cfg["device"])
    if ranks.world > 1 and device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())  # this process's GPU (process_group)
    if cfg["crop_size"] is not None:
        check_crop_size(cfg["crop_size"], images.shape[1])
    # Only native pixels keep the originals' grid: a resampled cache or whole images ignore crop_align.
    align = cfg["crop_align"] if resize == "native_crop" and cfg["crop_size"] is not None else 1
    run = FoldRun(images=images, index=index, fold=fold, seed=seed, model_cfg=model_cfg, cfg=cfg,
                  out_dir=Path(out_dir), resume_path=Path(state_dir) / "last.pt",
                  fingerprint=fingerprint(model_cfg, cfg, seed, fold, images.shape, train_rows, val_rows,
                                          targets, resize),
                  train_rows=train_rows, val_rows=val_rows, targets=targets, device=device,
                  progress=progress and ranks.main, on_epoch_end=on_epoch_end,
                  checkpoint_meta={"resize": resize, "crop_size": cfg["crop_size"], "crop_align": align,
                                   **(checkpoint_meta or {})},
                  ranks=ranks)
    resumed = load_resume_state(run.resume_path, run.fingerprint)
    if distributed.from_main(_epoch_of(resumed)) != _epoch_of(resumed):  # one state for all processes
        raise DataError(f"{run.resume_path}: the processes read different resume states "
                        f"(rank {ranks.rank}: epoch {_epoch_of(resumed)}); delete it to start the fold afresh")

    previous_determinism = torch.are_deterministic_algorithms_enabled()
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch.backends.cudnn.benchmark = True
    try:
        return _train(run, resumed)
    finally:
        torch.use_deterministic_algorithms(previous_determinism)


def _epoch_of(state: FoldState | None) -> int:
    return 0 if state is None else state.epoch


def _epoch_seed(seed: int, fold: int, epoch: int, ranks: Ranks) -> int:
    """The torch seed of an epoch (dropout, drop-path): each process its own masks."""
    return derive_seed(seed, fold, epoch, 3, *([ranks.rank] if ranks.world > 1 else []))


def _with_training_states(state: FoldState, ctx: StepContext) -> FoldState:
    """`state` plus the model, optimizer, schedule, EMA and RNG states: what last.pt stores."""
    return replace(state, model=cpu_state(ctx.model), optimizer=ctx.optimizer.state_dict(),
                   scheduler=ctx.scheduler.state_dict(),
                   ema=cpu_state(ctx.ema.module) if ctx.ema is not None else None,
                   scaler=ctx.scaler.state_dict() if ctx.scaler.is_enabled() else None,
                   global_step=ctx.global_step, rng_torch=torch.get_rng_state(),
                   # this process's GPU only: the _all variants would open a context on every visible GPU
                   rng_cuda=[torch.cuda.get_rng_state(ctx.device)] if ctx.device.type == "cuda" else [])


def _restore_training_states(ctx: StepContext, state: FoldState) -> None:
    """The reverse of _with_training_states, but for the model (loaded before ctx was made)."""
    ctx.optimizer.load_state_dict(state.optimizer)
    ctx.scheduler.load_state_dict(state.scheduler)
    if ctx.ema is not None:
        ctx.ema.module.load_state_dict(state.ema)
    if ctx.scaler.is_enabled() and state.scaler:
        ctx.scaler.load_state_dict(state.scaler)  # fp16: the loss scale it had reached
    ctx.global_step = state.global_step
    # (each epoch re-seeds anyway; restored so nothing depends on that)
    torch.set_rng_state(state.rng_torch)
    if ctx.device.type == "cuda" and state.rng_cuda:
        torch.cuda.set_rng_state(state.rng_cuda[0], ctx.device)


def _train(run: FoldRun, resumed: FoldState | None) -> dict:
    """Epochs from where `resumed` stopped (None: from the start) to the end or an early stop;
    last.pt after each, the outputs at the end."""
    cfg, fold, seed, ranks = run.cfg, run.fold, run.seed, run.ranks
    torch.manual_seed(derive_seed(seed, fold, 0, 0))  # head / random init
    model = create_model(run.model_cfg["name"], run.model_cfg.get("pretrained", False), num_classes=NUM_CLASSES)
    norm = data_config(model)
    if resumed is not None:
        model.load_state_dict(resumed.model)  # before the EMA copy is made from it
    n_params = sum(p.numel() for p in model.parameters())
    steps_per_epoch = len(epoch_keys(run.train_rows, cfg["batch_size"], seed=seed, fold=fold, epoch=0,
                                     max_batches=cfg["max_train_batches"], augment=False))
    ctx = make_step_context(model, cfg, run.device, steps_per_epoch)
    state = FoldState() if resumed is None else resumed
    if resumed is not None:
        _restore_training_states(ctx, resumed)
        logger.info("fold %d: resuming after epoch %d from %s", fold, state.epoch, run.resume_path)
    if ranks.world > 1:
        logger.info("fold %d: DistributedDataParallel over %d processes (%s, %s), each %d images of every "
                    "batch of %d, %d CPU threads each", fold, ranks.world, run.device.type,
                    torch.distributed.get_backend(), cfg["batch_size"] // ranks.world, cfg["batch_size"],
                    torch.get_num_threads())

    image_size = run.images.shape[1]
    synthetic = SyntheticFakes(cfg["synthetic_fakes"])
    train_crops = val_crops = None
    if cfg["crop_size"] is not None:
        boxes = picture_boxes(run.index, image_size, run.checkpoint_meta["resize"])
        shifts = picture_shifts(run.index, image_size, run.checkpoint_meta["resize"])
        align = run.checkpoint_meta["crop_align"]
        train_crops = CropPlan(size=cfg["crop_size"], boxes=boxes, shifts=shifts, align=align)
        # covering each picture, as predict's auto
        val_crops = CropPlan(size=cfg["crop_size"], boxes=boxes, shifts=shifts, align=align)
    random_draws = ctx.augmenter is not None or train_crops is not None or synthetic.active
    val_batch = cfg["batch_size"] // crops_per_image(cfg["crop_size"], image_size)
    # the held-out batches are shared out whole, every world-th one to each process
    val_keys = sequential_keys(run.val_rows, max(1, val_batch))[ranks.rank::ranks.world]
    train_plan, val_plan = BatchPlan(), BatchPlan(val_keys)
    train_loader = make_loader(CacheBatches(run.images, run.targets, ctx.augmenter, crops=train_crops,
                                            synthetic=synthetic),
                               train_plan, num_workers=cfg["num_workers"], device=run.device,
                               prepare=HostPreparation(ctx.mean, ctx.std, ctx.augmenter, ctx.channels_last))
    val_loader = make_loader(CacheBatches(run.images, run.targets, crops=val_crops), val_plan,
                             num_workers=cfg["num_workers"], device=run.device,
                             prepare=HostPreparation(ctx.mean, ctx.std, channels_last=ctx.channels_last))
    while state.epoch < cfg["epochs"] and not state.stopped:
        epoch_start = time.perf_counter()
        epoch = state.epoch  # 0-based index of this epoch
        torch.manual_seed(_epoch_seed(seed, fold, epoch, ranks))  # dropout / drop-path
        plan = epoch_keys(run.train_rows, cfg["batch_size"], seed=seed, fold=fold, epoch=epoch,
                          max_batches=cfg["max_train_batches"], augment=random_draws)
        train_plan.keys = rank_keys(plan, ranks)
        if not all(len(rows) for rows, _ in train_plan.keys):
            raise DataError(f"fold {fold}: {len(run.train_rows)} training images cannot give each of "
                            f"train.devices ({ranks.world}) processes a share of every batch")
        tr = train_one_epoch(ctx, train_loader, total=len(train_plan), progress=run.progress,
                             desc=f"fold {fold} epoch {epoch + 1}/{cfg['epochs']}")
        # held-out evaluation every `eval_every` epochs and always after the last one
        evaluated = (epoch + 1) % cfg["eval_every"] == 0 or epoch + 1 == cfg["epochs"]
        va = evaluate(ctx, val_loader, len(val_plan), run.targets, progress=run.progress) if evaluated else None
        state.epoch += 1
        if ranks.main:
            _end_epoch(run, state, ctx, tr, va, epoch_start)
        state.stopped = distributed.from_main(state.stopped)

    metrics = None
    if ranks.main:
        metrics = _write_outputs(run, state, norm=norm, n_params=n_params, precision=ctx.precision)
        run.resume_path.unlink(missing_ok=True)
    return distributed.from_main(metrics)


def _end_epoch(run: FoldRun, state: FoldState, ctx: StepContext, tr: dict, va: dict | None,
               epoch_start: float) -> None:
    """Rank 0's bookkeeping of a finished epoch (`state.epoch` done): history row, model selection,
    early stopping, progress line, last.pt and the caller's callback."""
    cfg, fold = run.cfg, run.fold
    state.train_seconds += tr["seconds"]
    state.train_images += tr["images"]
    nan = float("nan")
    row = {"epoch": state.epoch, "train_loss": tr["loss"], "train_acc": tr["acc"],
           "val_loss": va["loss"] if va else nan, "val_acc": va["acc"] if va else nan,
           "val_auc": va["auc"] if va else nan, "lr": tr["lr"],
           "images_per_s": tr["images"] / tr["seconds"] if tr["seconds"] > 0 else nan,
           "epoch_seconds": time.perf_counter() - epoch_start}
    state.history.append(row)
    if va is not None:
        # model selection on AUC; on a one-class held-out fold (AUC undefined) on loss
        score = va["auc"] if not math.isnan(va["auc"]) else -va["loss"]
        if score > state.best["score"]:
            prob = va["prob"][np.argsort(va["rows"], kind="stable")]  # in val_rows (sorted) order
            state.best = {"epoch": state.epoch, "score": score, "val_auc": va["auc"],
                          "state_dict": cpu_state(ctx.eval_model), "prob": torch.from_numpy(prob)}
            state.since_best = 0
        else:
            state.since_best += 1
    patience = cfg["early_stopping_patience"]
    state.stopped = patience > 0 and state.since_best >= patience
    if run.progress:
        held_out = (f"val_loss {row['val_loss']:.4f} val_auc {row['val_auc']:.4f}" if va
                    else "(not evaluated this epoch)")
        logger.info("fold %d epoch %d: train_loss %.4f %s (%.1f img/s)%s", fold, state.epoch,
                    row["train_loss"], held_out, row["images_per_s"], "; early stop" if state.stopped else "")
    save_resume_state(run.resume_path, run.fingerprint, _with_training_states(state, ctx))
    if run.on_epoch_end is not None:
        run.on_epoch_end(row)


def _write_outputs(run: FoldRun, state: FoldState, *, norm: dict, n_params: int, precision: str) -> dict:
    """best.pt, history.csv, oof.csv and metrics.json of the finished fold; returns the metrics."""
    out_dir, best = run.out_dir, state.best
    out_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out_dir / "best.pt", state_dict=best["state_dict"], model_name=run.model_cfg["name"],
                    num_classes=NUM_CLASSES, mean=norm["mean"], std=norm["std"], image_size=run.images.shape[1],
                    epoch=best["epoch"], val_auc=best["val_auc"], fold=run.fold,
                    pretrained=run.model_cfg.get("pretrained", False), meta=run.checkpoint_meta,
                    provenance=environment(device=str(run.device)))
    write_csv(pd.DataFrame(state.history, columns=HISTORY_COLUMNS), out_dir / "history.csv")
    write_csv(pd.DataFrame({"img_name": run.index["img_name"].to_numpy()[run.val_rows],
                            "target": run.targets[run.val_rows], "y_pred": best["prob"].numpy(),
                            "fold": run.fold}), out_dir / "oof.csv")
    metrics = {
        "fold": int(run.fold), "best_epoch": int(best["epoch"]), "best_val_auc": float(best["val_auc"]),
        "epochs_run": len(state.history), "early_stopped": bool(state.stopped),
        "train_seconds": float(state.train_seconds),
        "images_per_s": (float(state.train_images / state.train_seconds) if state.train_seconds > 0
                         else float("nan")),
        "n_params": int(n_params), "device": run.device.type, "precision": precision,
    }
    # NaN is not JSON: an undefined AUC (one-class held-out fold) is written as null
    write_json(out_dir / "metrics.json", {k: None if isinstance(v, float) and math.isnan(v) else v
                                          for k, v in metrics.items()})
    logger.info("fold %d: saved best.pt, history.csv, oof.csv and metrics.json in %s", run.fold, out_dir)
    return metrics
