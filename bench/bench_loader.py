"""Benchmark: training throughput from the memmap cache vs from ready-made tensors.

Both sides run the same model, optimizer and `train_one_epoch` loop in the same
process, alternating in short segments (a few batches each) so that a busy, shared
machine slows both alike; the medians over all segments are compared:

  real   CacheBatches over a uint8 memmap cache -> DataLoader -> uint8 batch to the
         device -> float conversion, augmentation (train.augment defaults) and
         normalisation on the device
  ready  the same batches, already normalised float tensors on the device

The last line is `ratio=<real/ready>` (median images/s of each side); 1.0 means the
loader costs nothing.

    .venv/bin/python bench/bench_loader.py [--model efficientnet_lite0] [--size 128]
        [--images 400] [--batch-size 32] [--workers 0] [--epochs 3] [--segment 4]
        [--device cpu] [--threads 0]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from deepfake_workflow.devices import resolve_device
from deepfake_workflow.inference import predict_log_probs
from deepfake_workflow.loader import BatchPlan, CacheBatches, make_loader, prepare_batch, sequential_keys
from deepfake_workflow.models import create_model
from deepfake_workflow.training import epoch_keys, make_step_context, resolve_train_cfg, train_one_epoch


def write_cache(path: Path, n: int, size: int) -> np.ndarray:
    """A memmap cache like build_cache writes (smooth random images, not noise)."""
    rng = np.random.default_rng(0)
    images = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, size, size, 3))
    coarse = rng.integers(0, 256, (n, size // 8, size // 8, 3), dtype=np.uint8)
    images[:] = coarse.repeat(8, axis=1).repeat(8, axis=2)
    images.flush()
    del images
    return np.load(path, mmap_mode="r")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--segment", type=int, default=4, help="batches per alternation")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg = resolve_train_cfg({"batch_size": args.batch_size, "num_workers": args.workers,
                             "device": args.device, "epochs": args.epochs + 1})
    device = resolve_device(cfg["device"])
    with tempfile.TemporaryDirectory() as tmp:
        images = write_cache(Path(tmp) / "images.npy", args.images, args.size)
        targets = np.arange(args.images, dtype=np.int64) % 2
        rows = np.arange(args.images)
        torch.manual_seed(0)
        model = create_model(args.model, pretrained=False, num_classes=2)
        keys0 = epoch_keys(rows, cfg["batch_size"], seed=0, fold=0, epoch=0, max_batches=None, augment=False)
        ctx = make_step_context(model, cfg, device, steps_per_epoch=len(keys0))
        plan = BatchPlan()
        loader = make_loader(CacheBatches(images, targets, ctx.augmenter), plan,
                             num_workers=cfg["num_workers"], device=device)
        # ready-made: the epoch-0 batches, decoded and normalised once, kept on the device
        ready = []
        for rows_b, _ in keys0:
            batch = {"images": torch.from_numpy(np.ascontiguousarray(images[rows_b])),
                     "target": torch.from_numpy(targets[rows_b])}
            x, y = prepare_batch(batch, device, ctx.mean, ctx.std, channels_last=ctx.channels_last)
            ready.append({"x": x, "target": y})

        def real(keys: list) -> dict:
            plan.keys = keys
            return train_one_epoch(ctx, loader, total=len(keys))

        print(f"model={args.model} size={args.size} images={args.images} batch={args.batch_size} "
              f"workers={args.workers} device={device} threads={torch.get_num_threads()} "
              f"augment={cfg['augment']}")
        augment = ctx.augmenter is not None
        real(keys0), train_one_epoch(ctx, ready)  # warm-up: allocator, oneDNN kernels, workers
        rates = {"real": [], "ready": []}
        seconds = {"real": 0.0, "ready": 0.0}
        for epoch in range(1, args.epochs + 1):
            keys = epoch_keys(rows, cfg["batch_size"], seed=0, fold=0, epoch=epoch, max_batches=None,
                              augment=augment)
            for n, start in enumerate(range(0, len(keys), args.segment)):
                segment = slice(start, start + args.segment)
                runs = {"real": lambda s=segment, k=keys: real(k[s]),
                        "ready": lambda s=segment: train_one_epoch(ctx, ready[s])}
                order = ("real", "ready") if n % 2 == 0 else ("ready", "real")  # no first-mover bias
                for side in order:
                    result = runs[side]()
                    rates[side].append(result["images"] / result["seconds"])
                    seconds[side] += result["seconds"]
            print(f"epoch {epoch}: real {seconds['real'] / epoch:.1f} s/epoch, "
                  f"ready {seconds['ready'] / epoch:.1f} s/epoch (running means)")
        start = time.perf_counter()
        eval_plan = BatchPlan(sequential_keys(rows, 2 * cfg["batch_size"]))
        predict_log_probs(ctx.eval_model, make_loader(CacheBatches(images, targets), eval_plan,
                                                      num_workers=0, device=device),
                          device=device, mean=ctx.mean, std=ctx.std, precision=ctx.precision,
                          channels_last=ctx.channels_last)
        eval_rate = args.images / (time.perf_counter() - start)
    real_rate, ready_rate = statistics.median(rates["real"]), statistics.median(rates["ready"])
    print(f"train seconds/epoch (real loader, {len(keys0) * args.batch_size} images): "
          f"{seconds['real'] / args.epochs:.1f}; validation {eval_rate:.1f} img/s")
    print(f"real images/s={real_rate:.1f} ready images/s={ready_rate:.1f}")
    print(f"ratio={real_rate / ready_rate:.3f}")


if __name__ == "__main__":
    main()
