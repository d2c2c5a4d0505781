#!/usr/bin/env python3
"""Stage check_split: check one split's label file against its image folder and write the
split's manifest (paths, counts, label checksum), which that split's stages read."""
import argparse
from pathlib import Path

from deepfake_workflow.cli import run_main
from deepfake_workflow.fetch import scan_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--split", required=True, choices=["train", "val", "test"])
    parser.add_argument("--images", required=True, type=Path, help="the split's image folder")
    parser.add_argument("--labels", required=True, type=Path, help="the split's label file")
    parser.add_argument("--out", required=True, type=Path, help="output: the split's manifest JSON")
    args = parser.parse_args()
    split = scan_split(args.split, args.images, args.labels)
    split.write(args.out)
    print(f"{split.split}: {split.n_images:,} images ({split.n_fake:,} fake, {split.n_real:,} real) "
          f"in {split.images}")


if __name__ == "__main__":
    run_main(main)
