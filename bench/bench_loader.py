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

`--vs-baseline`: the loader against the public baseline's per-epoch pipeline instead, no model
on either side. N JPEGs of 512 to 1024 px are written to a temporary folder and cached with
`build_cache` (config.yaml's cache settings); then, alternating in segments as above:

  baseline   a torch Dataset per image: PIL open, full decode `.convert("RGB")`,
             Resize((256, 256)), RandomHorizontalFlip, RandomVerticalFlip, ToTensor, Normalize;
             a DataLoader with the same batch size and workers
  ours       CacheBatches + make_loader with config.yaml's train settings (crop_size, augment,
             batch size): the uint8 crops and their augmentation parameters, what the workers
             hand to a GPU (the float conversion, augmentation and normalisation then run on
             the GPU: prepare_batch)
  ours_cpu   the same, plus that device-side work done by the workers too (loader
             .HostPreparation), as training on a CPU device runs it: normalised float batches
  ours_256   ours_cpu with whole cached 256 px images (crop_size null): the baseline's tensor size

The baseline's workers do all of its work on the CPU whatever the device, so `ours` is the
comparison for feeding a GPU. The last line is `ratio=<ours/baseline>` (images/s over all
segments of each side), after `ratio_cpu=` and `ratio_256=`.

    .venv/bin/python bench/bench_loader.py --vs-baseline [--n 512] [--workers 2] [--epochs 3] [--segment 8]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from deepfake_workflow.augment import Augmenter
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


BASELINE_SIZE = 256  # the public baseline's Resize((256, 256))
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def write_jpegs(folder: Path, n: int, seed: int = 0) -> list[str]:
    """n JPEGs (q90) of 512 to 1024 px a side: gradients plus noise, quick to make."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    names = []
    for i in range(n):
        width, height = (int(rng.integers(512, 1025)) for _ in range(2))
        ramp_x = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
        ramp_y = np.linspace(0, 255, height, dtype=np.float32)[:, None, None]
        tint = rng.uniform(0.2, 1.0, 3).astype(np.float32)
        noise = rng.integers(-12, 13, (height, width, 3), dtype=np.int16)
        arr = np.clip((ramp_x * tint + ramp_y * (1 - tint)) / 2 + 64 + noise, 0, 255).astype(np.uint8)
        name = f"{i:05d}.jpg"
        Image.fromarray(arr).save(folder / name, quality=90)
        names.append(name)
    return names


class BaselineDataset(torch.utils.data.Dataset):
    """The public baseline's per-image pipeline: decode the JPEG every epoch."""

    def __init__(self, paths: list[str], targets: np.ndarray, size: int = BASELINE_SIZE):
        from torchvision import transforms

        self.paths, self.targets = paths, targets
        self.transform = transforms.Compose([
            transforms.Resize((size, size)),
            transforms.RandomHorizontalFlip(),
            transforms.RandomVerticalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from PIL import Image

        with Image.open(self.paths[i]) as im:
            image = im.convert("RGB")
        return self.transform(image), int(self.targets[i])


def vs_baseline(args) -> None:
    """The loader against the public baseline's per-epoch JPEG pipeline (see the docstring)."""
    from torch.utils.data import DataLoader

    from deepfake_workflow.cache import build_cache, open_cache
    from deepfake_workflow.config import load_config
    from deepfake_workflow.crops import picture_boxes
    from deepfake_workflow.loader import CropPlan, HostPreparation, normalisation

    config = load_config(Path(__file__).resolve().parents[1] / "config.yaml")
    cache_cfg, train_cfg = config["cache"], resolve_train_cfg({**config["train"], "device": "cpu"})
    batch, workers = train_cfg["batch_size"], args.workers
    device = torch.device("cpu")
    with tempfile.TemporaryDirectory(prefix="bench_loader_") as tmp:
        folder = Path(tmp) / "jpegs"
        folder.mkdir()
        started = time.perf_counter()
        names = write_jpegs(folder, args.n)
        megabytes = sum((folder / n).stat().st_size for n in names) / 1e6
        print(f"{args.n} JPEGs, 512-1024 px a side, q90, {megabytes:.0f} MB, written in "
              f"{time.perf_counter() - started:.1f} s")
        targets = np.arange(args.n, dtype=np.int64) % 2
        items = pd.DataFrame({"img_name": names, "target": targets})
        started = time.perf_counter()
        build_cache(items, folder, Path(tmp) / "cache", size=cache_cfg["size"], resize=cache_cfg["resize"],
                    workers=max(1, workers), progress=False)
        build_s = time.perf_counter() - started
        images, index = open_cache(Path(tmp) / "cache")
        print(f"cache: size={cache_cfg['size']} resize={cache_cfg['resize']}, built once in {build_s:.1f} s "
              f"({args.n / build_s:.1f} images/s, {max(1, workers)} workers)")
        print(f"batch={batch} workers={workers} threads={torch.get_num_threads()} cpus={os.cpu_count()} "
              f"crop_size={train_cfg['crop_size']} augment={train_cfg['augment']}")

        mean, std = normalisation(IMAGENET_MEAN, IMAGENET_STD, device)
        augmenter = Augmenter(train_cfg["augment"])
        boxes = picture_boxes(index, images.shape[1], cache_cfg["resize"])
        crops = CropPlan(size=train_cfg["crop_size"], boxes=boxes) if train_cfg["crop_size"] else None
        rows = np.arange(args.n)
        ours_plan, cpu_plan, ours256_plan, base_plan = BatchPlan(), BatchPlan(), BatchPlan(), BatchPlan()
        # as training on a CPU device does: the workers hand over ready, normalised batches
        prepare = HostPreparation(mean, std, augmenter, channels_last=True)
        ours_loader = make_loader(CacheBatches(images, targets, augmenter, crops=crops), ours_plan,
                                  num_workers=workers, device=device)
        cpu_loader = make_loader(CacheBatches(images, targets, augmenter, crops=crops), cpu_plan,
                                 num_workers=workers, device=device, prepare=prepare)
        ours256_loader = make_loader(CacheBatches(images, targets, augmenter), ours256_plan,
                                     num_workers=workers, device=device, prepare=prepare)
        base_loader = DataLoader(BaselineDataset([str(folder / n) for n in names], targets), batch_size=batch,
                                 sampler=base_plan, num_workers=workers, persistent_workers=workers > 0,
                                 drop_last=True)

        def ours(plan, loader):
            def segment(keys: list) -> tuple[int, tuple]:
                plan.keys, count, shape = keys, 0, None
                for item in loader:
                    x = item["x"] if "x" in item else item["images"]
                    count, shape = count + len(x), tuple(x.shape)
                return count, shape
            return segment

        def baseline(keys: list) -> tuple[int, tuple]:
            base_plan.keys = [int(r) for rows_b, _ in keys for r in rows_b]
            count, shape = 0, None
            for x, _ in base_loader:
                count, shape = count + len(x), tuple(x.shape)
            return count, shape

        sides = {"baseline": baseline, "ours": ours(ours_plan, ours_loader), "ours_cpu": ours(cpu_plan, cpu_loader),
                 "ours_256": ours(ours256_plan, ours256_loader)}
        warm = epoch_keys(rows, batch, seed=0, fold=0, epoch=0, max_batches=2, augment=True)
        shapes = {name: run(warm)[1] for name, run in sides.items()}  # workers up, allocator warm
        totals = {name: [0, 0.0] for name in sides}
        n_segment = 0
        for epoch in range(1, args.epochs + 1):
            keys = epoch_keys(rows, batch, seed=0, fold=0, epoch=epoch, max_batches=None, augment=True)
            for start in range(0, len(keys), args.segment):
                names_order = list(sides)
                shift = n_segment % len(names_order)  # each side leads in turn: no first-mover bias
                for name in names_order[shift:] + names_order[:shift]:
                    began = time.perf_counter()
                    count, _ = sides[name](keys[start:start + args.segment])
                    totals[name][0] += count
                    totals[name][1] += time.perf_counter() - began
                n_segment += 1
        rates = {name: count / seconds for name, (count, seconds) in totals.items()}
    labels = {"baseline": "baseline (JPEG decode, Resize 256, flips, ToTensor, Normalize)",
              "ours": "ours (cache, config.yaml crops, uint8 + augmentation parameters for the device)",
              "ours_cpu": "ours_cpu (the same, augmented and normalised by the workers, as for a CPU device)",
              "ours_256": "ours_256 (ours_cpu with whole 256 px images)"}
    for name, rate in rates.items():
        print(f"{labels[name]}: images/s={rate:.1f} over {totals[name][0]} images, batch {shapes[name]}")
    print(f"ratio_cpu={rates['ours_cpu'] / rates['baseline']:.3f}")
    print(f"ratio_256={rates['ours_256'] / rates['baseline']:.3f}")
    print(f"ratio={rates['ours'] / rates['baseline']:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vs-baseline", action="store_true",
                        help="the loader against the public baseline's JPEG pipeline, no model")
    parser.add_argument("--n", type=int, default=512, help="--vs-baseline: JPEGs to write (default 512)")
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None, help="loader workers (default 0; --vs-baseline 2)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--segment", type=int, default=None,
                        help="batches per alternation (default 4; --vs-baseline 8: its workers refill less often)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.workers is None:
        args.workers = 2 if args.vs_baseline else 0
    if args.segment is None:
        args.segment = 8 if args.vs_baseline else 4
    if args.vs_baseline:
        vs_baseline(args)
        return

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
