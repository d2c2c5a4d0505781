"""The fetch_data stage: make the raw data available in the Multi-FFDI layout, then check it.

- demo: synthesise the embedded demo under the data root;
- local: read an existing copy in place (never copied: the real set is hundreds of GB);
- url: download archives (resumable, checksum-verified) and extract them safely.

Whatever the source, the labels of every split are validated against the images on disk and
the result is summarised in a manifest that later stages read.
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import asdict
from pathlib import Path
from urllib.parse import urlparse

from .download import sha256_file
from .errors import DataError
from .labels import read_labels, require_both_classes
from .layout import (
    Manifest,
    SplitManifest,
    check_local_data,
    data_root,
    methods_file,
    scored_split,
    split_paths,
    used_splits,
)

logger = logging.getLogger(__name__)


def _download_and_extract(config: dict, root: Path, progress: bool) -> None:
    from .archives import safe_extract
    from .download import download

    data = config["data"]
    downloads = Path(config["results_dir"]) / "data" / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    for entry in data["urls"]:
        name = entry.get("filename") or Path(urlparse(entry["url"]).path).name or "archive"
        archive = download(entry["url"], downloads / name, sha256=entry["sha256"].lower(),
                           timeout=float(data["download_timeout"]), retries=int(data["download_retries"]),
                           progress=progress)
        safe_extract(archive, root, progress=progress)


def prepare_raw_data(config: dict, *, workers: int = 1, progress: bool = True) -> Path:
    """Make the raw data exist under the data root; returns the root."""
    root = data_root(config)
    source = config["data"]["source"]
    if source == "demo":
        from .demo import write_demo_dataset

        demo = config["data"]["demo"]
        write_demo_dataset(root, seed=int(config["seed"]), workers=workers, **demo)
    elif source == "url":
        _download_and_extract(config, root, progress)
    else:
        check_local_data(config)
    return root


def scan_split(split: str, images: str | Path, labels: str | Path) -> SplitManifest:
    """Check one split's label file against its image folder; its manifest."""
    labelled = split != "test"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = read_labels(labels, require_target=labelled, image_dir=images)
    for w in caught:
        logger.warning("%s", w.message)
    if labelled:
        require_both_classes(table, f"split '{split}' ({labels})")
    return SplitManifest(split=split, images=str(images), labels=str(labels), n_images=int(len(table)),
                         n_fake=int((table["target"] == 1).sum()), n_real=int((table["target"] == 0).sum()),
                         labels_sha256=sha256_file(labels))


def build_manifest(config: dict) -> Manifest:
    """Validate the label files of every split against the images on disk."""
    splits = {}
    for split in used_splits(config):
        paths = split_paths(config, split)
        splits[split] = asdict(scan_split(split, paths.images, paths.labels))
    methods = methods_file(config)
    if methods and not Path(methods).is_file():
        if config["data"]["methods_file"]:
            raise DataError(f"config key 'data.methods_file': file {methods} does not exist")
        methods = None
    return Manifest(source=config["data"]["source"], root=str(data_root(config)), splits=splits,
                    test_source=scored_split(config), methods_file=str(methods) if methods else None)
