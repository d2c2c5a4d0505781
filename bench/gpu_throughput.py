"""GPU throughput check: model-only, the full loop from the cache, and the public baseline's loop.

For each model (default: configs/multi-ffdi.yaml's model.name and resnet18, random weights, so
nothing is downloaded), at 256 px, with the project's training step (`make_step_context`,
`train_one_epoch`: bf16 autocast, channels_last, AdamW):

  model-only   ready normalised tensors already on the device: the model's ceiling
  full loop    CacheBatches over a uint8 memmap cache -> DataLoader -> uint8 to the device ->
               augmentation (config.yaml's train.augment) and normalisation on the device
  baseline     the public baseline's per-epoch loop: JPEG decode, Resize(size), flips,
               ToTensor, Normalize in DataLoader workers, float batches copied to the device

and the peak GPU memory (torch.cuda.max_memory_allocated). One line per model ends with
`ratio=<full loop / model-only>` (1.0: the loader costs nothing) and `vs_baseline=<full / baseline>`.

    python bench/gpu_throughput.py                      # on the GPU (bench/gpu_check.sh runs it)
    python bench/gpu_throughput.py --device cpu --quick # the same code path on the CPU, tiny sizes
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from bench_loader import BaselineDataset, write_cache, write_jpegs
from torch.utils.data import DataLoader

from deepfake_workflow.config import load_config
from deepfake_workflow.loader import BatchPlan, CacheBatches, make_loader
from deepfake_workflow.models import create_model
from deepfake_workflow.training import epoch_keys, make_step_context, resolve_train_cfg, train_one_epoch

REPO = Path(__file__).resolve().parents[1]


def default_models() -> list[str]:
    real = yaml.safe_load((REPO / "configs" / "multi-ffdi.yaml").read_text())["model"]["name"]
    return [real, "resnet18"]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rate(ctx, batches, device: torch.device, total: int | None = None) -> float:
    """Images/s of one train_one_epoch pass over `batches` (synchronised at both ends)."""
    synchronize(device)
    started = time.perf_counter()
    result = train_one_epoch(ctx, batches, total=total)
    synchronize(device)
    return result["images"] / (time.perf_counter() - started)


def check_model(name: str, args, device: torch.device, images: np.ndarray, jpeg_paths: list[str]) -> None:
    augment = load_config(REPO / "config.yaml")["train"]["augment"]
    cfg = resolve_train_cfg({"batch_size": args.batch_size, "num_workers": args.workers, "device": device.type,
                             "precision": args.precision, "channels_last": True, "augment": augment,
                             "epochs": 1000, "warmup_epochs": 0})
    torch.manual_seed(0)
    model = create_model(name, pretrained=False, num_classes=2)
    n_params = sum(p.numel() for p in model.parameters())
    ctx = make_step_context(model, cfg, device, steps_per_epoch=1000)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    bs, size = args.batch_size, args.size
    generator = torch.Generator(device="cpu").manual_seed(0)
    ready = [{"x": torch.randn(bs, 3, size, size, generator=generator).to(device)
                   .contiguous(memory_format=torch.channels_last),
              "target": (torch.arange(bs) % 2).to(device)} for _ in range(4)]
    train_one_epoch(ctx, ready[:2])  # warm-up: cuDNN autotuning, allocator
    model_only = rate(ctx, [ready[i % len(ready)] for i in range(args.steps)], device)

    targets = np.arange(len(images), dtype=np.int64) % 2
    plan = BatchPlan()
    loader = make_loader(CacheBatches(images, targets, ctx.augmenter), plan, num_workers=args.workers, device=device)
    rows = np.arange(len(images))
    plan.keys = epoch_keys(rows, bs, seed=0, fold=0, epoch=0, max_batches=2, augment=True)
    train_one_epoch(ctx, loader)  # warm-up: workers
    plan.keys = epoch_keys(rows, bs, seed=0, fold=0, epoch=1, max_batches=args.steps, augment=True)
    full = rate(ctx, loader, device, total=len(plan))

    base_targets = np.arange(len(jpeg_paths), dtype=np.int64) % 2
    base_loader = DataLoader(BaselineDataset(jpeg_paths, base_targets, size), batch_size=bs, shuffle=True,
                             num_workers=args.workers, drop_last=True, pin_memory=device.type == "cuda",
                             persistent_workers=args.workers > 0)

    def baseline_batches(limit: int):
        for step, (x, y) in enumerate(base_loader):
            if step >= limit:
                break
            yield {"x": x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last),
                   "target": y.to(device, non_blocking=True)}
    train_one_epoch(ctx, baseline_batches(1))  # warm-up: workers
    baseline = rate(ctx, baseline_batches(args.steps), device)
    peak = (f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB" if device.type == "cuda"
            else "n/a (cpu)")
    print(f"{name} ({n_params / 1e6:.1f}M params) {size}px batch={bs} {ctx.precision} channels_last "
          f"device={device.type}: model-only images/s={model_only:.1f} full-loop images/s={full:.1f} "
          f"baseline images/s={baseline:.1f} peak_memory={peak} ratio={full / model_only:.3f} "
          f"vs_baseline={full / baseline:.3f}", flush=True)
    del ctx, model, ready
    if device.type == "cuda":
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--quick", action="store_true", help="tiny sizes and test models (a CPU check of the code)")
    parser.add_argument("--models", nargs="+", default=None)
    parser.add_argument("--size", type=int, default=None, help="image side in px (default 256; --quick 32)")
    parser.add_argument("--batch-size", type=int, default=None, help="default 64; --quick 8")
    parser.add_argument("--steps", type=int, default=None, help="timed batches per measurement (default 30; --quick 3)")
    parser.add_argument("--workers", type=int, default=None, help="loader workers (default 8; --quick 0)")
    parser.add_argument("--jpegs", type=int, default=None, help="JPEGs for the baseline (default 1024; --quick 24)")
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp16", "fp32"])
    args = parser.parse_args()
    quick = {"models": ["test_resnet", "resnet18"], "size": 32, "batch_size": 8, "steps": 3, "workers": 0,
             "jpegs": 24}
    full = {"models": default_models(), "size": 256, "batch_size": 64, "steps": 30, "workers": 8, "jpegs": 1024}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_throughput: --device cuda but torch cannot use a GPU here (try --device cpu --quick)")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        print(f"device: {torch.cuda.get_device_name(device)}, torch {torch.__version__} (CUDA {torch.version.cuda})")
    with tempfile.TemporaryDirectory(prefix="gpu_throughput_") as tmp:
        started = time.perf_counter()
        folder = Path(tmp) / "jpegs"
        folder.mkdir()
        jpeg_paths = [str(folder / n) for n in write_jpegs(folder, args.jpegs)]
        n_cache = max(args.batch_size * (args.steps + 2), 4 * args.batch_size)
        images = write_cache(Path(tmp) / "images.npy", n_cache, args.size)
        print(f"inputs: {args.jpegs} JPEGs (512-1024 px), a {n_cache}-image {args.size} px cache, "
              f"{time.perf_counter() - started:.1f} s; workers={args.workers}", flush=True)
        for name in args.models:
            check_model(name, args, device, images, jpeg_paths)


if __name__ == "__main__":
    main()
