#!/usr/bin/env python3
"""Stage fetch_data: make the raw data exist (demo / local / url), check every split's labels
against its images, and write the dataset manifest."""
import argparse

from deepfake_workflow.cli import add_config_args, config_from_args, run_main
from deepfake_workflow.fetch import build_manifest, prepare_raw_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_config_args(parser)
    parser.add_argument("--manifest", required=True, help="output: dataset manifest JSON")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    config = config_from_args(args)
    prepare_raw_data(config, workers=args.workers, progress=not args.no_progress)
    manifest = build_manifest(config)
    manifest.write(args.manifest)
    for split, info in manifest.splits.items():
        print(f"{split}: {info['n_images']} images ({info['n_fake']} fake, {info['n_real']} real) in {info['images']}")
    print(manifest.describe())


if __name__ == "__main__":
    run_main(main)
