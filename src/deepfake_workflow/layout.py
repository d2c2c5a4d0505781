"""Where each split's images and label file live: the Multi-FFDI layout and its overrides.

The real archives unpack to::

    phase1/trainset/<md5>.jpg   phase1/trainset_label.txt
    phase1/valset/<md5>.jpg     phase1/valset_label.txt
    phase2/testset1_seen/<md5>.jpg   phase2/testset1_seen_nolabel.txt

The demo is written in the same layout, so one reader serves demo, local and downloaded data.
"""
from __future__ import annotations

import json
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


def methods_file(config: dict) -> str | None:
    if config["data"]["methods_file"]:
        return config["data"]["methods_file"]
    if config["data"]["source"] == "demo":
        return str(data_root(config) / "methods.csv")
    return None


@dataclass
class Manifest:
    """What fetch_data found: resolved paths and counts per split. Read by later stages."""

    source: str
    root: str
    splits: dict
    test_source: str
    methods_file: str | None

    def write(self, path: Path) -> None:
        from .atomic import write_json

        write_json(path, asdict(self))

    @classmethod
    def read(cls, path: str | Path) -> "Manifest":
        path = Path(path)
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as exc:
            raise DataError(f"cannot read dataset manifest {path}: {exc}") from exc

    def split(self, name: str) -> SplitPaths:
        if name == "test" and self.test_source == "val":
            name = "val"
        entry = self.splits[name]
        return SplitPaths(images=entry["images"], labels=entry["labels"])
