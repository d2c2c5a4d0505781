"""Deepfake-image detection workflow library: data, cache, models, training, reports.

Knows nothing of Snakemake or DVC; the stage programs in scripts/ call into it.
"""
__version__ = "0.1.0"
