#!/usr/bin/env python3
"""Stage build_cache: decode and resize one split once into a uint8 memmap array + index CSV."""
import argparse
from pathlib import Path

from deepfake_workflow.cache import build_cache
from deepfake_workflow.cli import add_config_args, config_from_args, run_main
from deepfake_workflow.labels import read_labels
from deepfake_workflow.layout import SplitManifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_config_args(parser)
    parser.add_argument("--split-manifest", required=True, help="the split's manifest from fetch_data")
    parser.add_argument("--out-dir", required=True, type=Path)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    cache = config_from_args(args)["cache"]
    split = SplitManifest.read(args.split_manifest)
    # Image existence was checked by fetch_data; here the label file only gives names and targets.
    items = read_labels(split.labels, require_target=split.split != "test")
    summary = build_cache(items, Path(split.images), args.out_dir, size=cache["size"], resize=cache["resize"],
                          on_bad_image=cache["on_bad_image"], workers=args.workers,
                          max_pixels=cache["max_pixels"], progress=not args.no_progress)
    print(f"cache {split.split}: {summary.n_images} images, {summary.n_bad} bad, "
          f"{summary.images_per_s:.0f} images/s -> {args.out_dir}")


if __name__ == "__main__":
    run_main(main)
