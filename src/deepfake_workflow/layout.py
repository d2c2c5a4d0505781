"""Where each split's images and label file live: the Multi-FFDI layout and its overrides.

The real archives unpack to::

    phase1/trainset/<md5>.jpg   phase1/trainset_label.txt
    phase1/valset/<md5>.jpg     phase1/valset_label.txt
    phase2/testset1_seen/<md5>.jpg   phase2/testset1_seen_nolabel.txt

The demo is written in the same layout, so one reader serves demo, local and downloaded data.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import ConfigError, DataError

DEFAULT_PATHS = {
    "train": ("phase1/trainset", "phase1/trainset_label.txt"),
    "val": ("phase1/valset", "phase1/valset_label.txt"),
    "test": ("phase2/testset1_seen", "phase2/testset1_seen_nolabel.txt"),
}
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SplitPaths:
    images: str
    labels: str


def data_root(config: dict) -> Path:
    """The folder holding phase1/ and phase2/; demo and url data go under the results dir."""
    data = config["data"]
    if data["root"]:
        return Path(data["root"])
    if data["source"] == "local":
        raise ConfigError("config key 'data.root': required when data.source is 'local'")
    return Path(config["results_dir"]) / "data" / "raw"


def split_paths(config: dict, split: str) -> SplitPaths:
    """Images folder and label file of one split; each can be overridden on its own."""
    data = config["data"]
    images_default, labels_default = DEFAULT_PATHS[split]
    images = data.get(f"{split}_images")
    labels = data.get(f"{split}_labels")
    if images is None or labels is None:
        root = data_root(config)
        images = images or str(root / images_default)
        labels = labels or str(root / labels_default)
    return SplitPaths(images=str(images), labels=str(labels))


def scored_split(config: dict) -> str:
    """'test' when a phase-2 test set is used, 'val' when the validation split stands in.

    Decided from the config alone (before any job runs), so the Snakefile knows which cache
    the submission reads: with no phase-2 test set the validation split is scored, as the
    phase-1 leaderboard did.
    """
    choice = config["data"]["test_split"]
    if choice == "phase2":
        return "test"
    if choice == "val":
        return "val"
    source = config["data"]["source"]
    if source == "demo":
        return "test"
    if source == "url":
        # The archives are not there yet; expect phase 2 if an override or an archive names it.
        named = config["data"]["test_labels"] or any(
            "phase2" in (u.get("filename") or u["url"]) for u in config["data"]["urls"]
        )
        return "test" if named else "val"
    return "test" if Path(split_paths(config, "test").labels).is_file() else "val"


def used_splits(config: dict) -> list[str]:
    """The splits this config reads: train, val, and test when a phase-2 test set is scored."""
    return ["train", "val"] + (["test"] if scored_split(config) == "test" else [])


def cache_split(split: str, test_source: str) -> str:
    """The cache a split's predictions read: without a phase-2 test set, 'test' reads 'val'."""
    return "val" if split == "test" and test_source == "val" else split


def check_local_data(config: dict) -> None:
    """For data.source 'local': every split's label file and image folder exist and are not empty.

    Called before any job runs, so a wrong or unmounted data folder is an error naming it,
    never a run that quietly reuses the results of another data set.
    """
    if config["data"]["source"] != "local":
        return
    root = data_root(config)
    if config["data"]["root"] and not root.is_dir():
        raise DataError(f"config key 'data.root': data folder {root} does not exist (not mounted?); "
                        f"expected the folder that holds phase1/ (and optionally phase2/)")
    for split in used_splits(config):
        paths = split_paths(config, split)
        key = f"data.{split}_labels" if config["data"][f"{split}_labels"] else "data.root"
        labels, images = Path(paths.labels), Path(paths.images)
        if not labels.is_file():
            raise DataError(f"config key '{key}': label file {labels} of split '{split}' does not exist")
        if labels.stat().st_size == 0:
            raise DataError(f"config key '{key}': label file {labels} of split '{split}' is empty")
        if not images.is_dir():
            raise DataError(f"config key 'data.{split}_images' / 'data.root': image folder {images} "
                            f"of split '{split}' does not exist")
        if not _has_entries(images):
            raise DataError(f"config key 'data.{split}_images' / 'data.root': image folder {images} "
                            f"of split '{split}' is empty")


def _has_entries(folder: Path) -> bool:
    # scandir reads the first batch of entries only; iterdir lists the whole folder (524k names),
    # and this runs every time the Snakefile is read.
    with os.scandir(folder) as entries:
        return next(entries, None) is not None


def methods_file(config: dict) -> str | None:
    if config["data"]["methods_file"]:
        return config["data"]["methods_file"]
    if config["data"]["source"] == "demo":
        return str(data_root(config) / "methods.csv")
    return None


@dataclass
class SplitManifest:
    """One split as fetch_data found it. Each split has its own file, so a label edit in one
    split changes only that split's manifest (DVC compares contents)."""

    split: str
    images: str
    labels: str
    n_images: int
    n_fake: int
    n_real: int
    labels_sha256: str

    @property
    def paths(self) -> SplitPaths:
        return SplitPaths(images=self.images, labels=self.labels)

    def write(self, path: Path) -> None:
        from .atomic import write_json

        write_json(path, asdict(self))

    @classmethod
    def read(cls, path: str | Path) -> SplitManifest:
        return _from_json(cls, path, "split manifest")


@dataclass
class Manifest:
    """What fetch_data found: the source, the root and every split. Read by the report."""

    source: str
    root: str
    splits: dict
    test_source: str
    methods_file: str | None

    def write(self, path: Path) -> None:
        from .atomic import write_json

        write_json(path, asdict(self))

    @classmethod
    def read(cls, path: str | Path) -> Manifest:
        return _from_json(cls, path, "dataset manifest")

    def split(self, name: str) -> SplitPaths:
        entry = self.splits[cache_split(name, self.test_source)]
        return SplitPaths(images=entry["images"], labels=entry["labels"])

    def summary(self) -> dict:
        """What the report shows about the data (and metrics.json records)."""
        return {"description": self.describe(), "source": self.source, "root": self.root,
                "test_source": self.test_source,
                "n_images": {name: self.splits[name]["n_images"] for name in SPLITS if name in self.splits}}

    def describe(self) -> str:
        """One line naming the data a run uses, e.g.
        `data: local /data/multiFFDI: train 524,108, val 147,364, test 20,000`."""
        counts = ", ".join(f"{name} {self.splits[name]['n_images']:,}" for name in SPLITS if name in self.splits)
        scored = "" if self.test_source == "test" else " (no phase-2 test set: the submission scores val)"
        return f"data: {self.source} {self.root}: {counts}{scored}"


def _from_json(cls, path: str | Path, what: str):
    path = Path(path)
    try:
        return cls(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError) as exc:
        raise DataError(f"cannot read {what} {path}: {exc}") from exc
