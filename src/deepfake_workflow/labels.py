"""Parse and validate Multi-FFDI label files (CSV with a header despite the .txt name).

`img_name,target` with 1 = deepfake, 0 = real. The phase-2 test list has no target.
Every error names the file and, where there is one, the row (line number in the file).
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import pandas as pd

from .errors import DataError

UNKNOWN_TARGET = -1
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"label file not found: {path}") from None
    except OSError as exc:
        raise DataError(f"cannot read label file {path}: {exc}") from None
    try:
        # utf-8-sig drops a BOM; universal newlines in StringIO handle CRLF.
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"label file {path} is not UTF-8 text: {exc}") from None


def read_labels(path: str | os.PathLike, *, require_target: bool = True,
                image_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """Read a label file into a DataFrame with `img_name`, `target` (+ any extra columns).

    With `image_dir`, every listed image must exist there; images present but not listed
    produce a warning with their count. Without a target column (`require_target=False`,
    the test list) target is -1.
    """
    path = Path(path)
    text = _read_text(path)
    if not text.strip():
        raise DataError(f"label file {path} is empty: expected a header 'img_name,target' and one row per image")
    try:
        df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, ValueError) as exc:
        raise DataError(f"label file {path} is not valid CSV: {exc}") from None
    df.columns = [str(c).strip() for c in df.columns]
    expected = "img_name,target" if require_target else "img_name"
    if "img_name" not in df.columns:
        first = df.columns[0] if len(df.columns) else ""
        if first.lower().endswith(IMAGE_SUFFIXES):
            raise DataError(f"label file {path}: the header is missing (first line is data: '{first}'); "
                            f"expected header '{expected}'")
        raise DataError(f"label file {path}: columns are {list(df.columns)}, expected header '{expected}'")
    if require_target and "target" not in df.columns:
        raise DataError(f"label file {path}: no 'target' column (columns {list(df.columns)}), "
                        f"expected header '{expected}'")
    if df.empty:
        raise DataError(f"label file {path} lists no images (empty split)")

    df["img_name"] = df["img_name"].str.strip()
    line = pd.Series(range(2, len(df) + 2), index=df.index)  # line 1 is the header

    empty = df["img_name"] == ""
    if empty.any():
        raise DataError(f"label file {path}, row {int(line[empty].iloc[0])}: empty img_name")
    bad_name = df["img_name"].str.contains(r"[/\\]|^\.\.?$", regex=True)
    if bad_name.any():
        i = bad_name.idxmax()
        raise DataError(f"label file {path}, row {int(line[i])}: img_name '{df.at[i, 'img_name']}' "
                        "must be a plain file name")
    dup = df["img_name"].duplicated(keep="first")
    if dup.any():
        i = dup.idxmax()
        first = int(line[df.index[df["img_name"] == df.at[i, "img_name"]][0]])
        raise DataError(
            f"label file {path}, row {int(line[i])}: duplicate img_name '{df.at[i, 'img_name']}' "
            f"(first listed on row {first}); {int(dup.sum())} duplicate row(s) in all"
        )

    if "target" in df.columns:
        targets = df["target"].str.strip()
        if require_target:
            ok = targets.isin(["0", "1"])
            if not ok.all():
                i = (~ok).idxmax()
                raise DataError(
                    f"label file {path}, row {int(line[i])}: target '{df.at[i, 'target']}' for "
                    f"'{df.at[i, 'img_name']}' is not 0 or 1; {int((~ok).sum())} bad row(s) in all"
                )
            df["target"] = targets.astype(int)
        else:
            # Test lists may carry an empty or placeholder target column.
            known = targets.isin(["0", "1"])
            df["target"] = targets.where(known, str(UNKNOWN_TARGET)).astype(int)
    else:
        df["target"] = UNKNOWN_TARGET

    if image_dir is not None:
        check_images_exist(df, Path(image_dir), path, line)
    cols = ["img_name", "target"] + [c for c in df.columns if c not in ("img_name", "target")]
    return df[cols].reset_index(drop=True)


def check_images_exist(df: pd.DataFrame, image_dir: Path, label_path: Path, line: pd.Series | None = None) -> None:
    """Every listed image must exist in image_dir; unlisted files only warn."""
    if not image_dir.is_dir():
        raise DataError(f"image folder not found: {image_dir} (listed by {label_path})")
    # One directory listing instead of one stat per image: 524k stats on a network disk are slow.
    on_disk = set(os.listdir(image_dir))
    listed = df["img_name"]
    missing = ~listed.isin(on_disk)
    if missing.any():
        i = missing.idxmax()
        row = int(line[i]) if line is not None else int(i) + 2
        examples = ", ".join(listed[missing].head(5))
        raise DataError(
            f"label file {label_path}, row {row}: image '{listed[i]}' not found in {image_dir}; "
            f"{int(missing.sum())} listed image(s) missing in all (e.g. {examples})"
        )
    unlisted = len(on_disk - set(listed))
    if unlisted:
        warnings.warn(f"{image_dir}: {unlisted} file(s) on disk are not listed in {label_path}; they are ignored",
                      stacklevel=2)


def require_both_classes(df: pd.DataFrame, what: str) -> None:
    counts = df["target"].value_counts()
    if counts.get(0, 0) == 0 or counts.get(1, 0) == 0:
        raise DataError(f"{what} has only one class (real: {counts.get(0, 0)}, fake: {counts.get(1, 0)}); need both")
