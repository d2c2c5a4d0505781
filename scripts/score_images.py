#!/usr/bin/env python3
"""Score any images with a trained model: an alias of `deepfake-workflow score` (same arguments,
same code: deepfake_workflow.command), kept for existing scripts.

    python scripts/score_images.py -c results/models/fold0/best.pt photos/ -o scores.csv
"""
import sys

from deepfake_workflow.command import main

if __name__ == "__main__":
    main(["score", *sys.argv[1:]])
