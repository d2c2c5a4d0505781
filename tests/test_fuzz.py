"""Fuzzed inputs: mutated images, label files and config values give clear errors, never a traceback.

FUZZ_CASES and FUZZ_SEED (environment) make a longer run by hand, e.g.
    FUZZ_CASES=20000 FUZZ_SEED=7 pytest tests/test_fuzz.py
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO
from fuzz_images import MUTATIONS, write_cases

from deepfake_workflow.config import load_schema, validate_config
from deepfake_workflow.errors import ConfigError, DataError
from deepfake_workflow.labels import read_labels
from deepfake_workflow.layout import SplitManifest

CASES = int(os.environ.get("FUZZ_CASES", "1000"))
SEED = int(os.environ.get("FUZZ_SEED", "0"))
SIZE = 32
SECONDS_PER_IMAGE = 5.0  # a hang shows as a file over this, or the child's timeout
# Address space (not RSS) cap of the decoding child: a PNG chunk length of 2**32 - 1 makes PIL
# reserve a 4 GB read buffer it never fills, harmless without a cap; a real runaway stops here.
MEM_LIMIT_MB = 8192
PEAK_RSS_MB = 2048  # what a decode may really use: cache.max_pixels (100M) bounds one image


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory):
    """CASES mutated files, and what the library made of each in a memory-capped child process."""
    root = tmp_path_factory.mktemp("fuzz")
    images = root / "trainset"
    cases = write_cases(images, cases=CASES, seed=SEED)
    report = root / "decode.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "tests/fuzz_images.py"), "decode", str(images), "--size", str(SIZE),
         "--mem-limit-mb", str(MEM_LIMIT_MB), "--report", str(report)],
        capture_output=True, text=True, timeout=SECONDS_PER_IMAGE * CASES / 10 + 60)
    assert proc.returncode == 0, proc.stderr  # a worker killed by a signal or the memory cap ends here
    decoded = json.loads(report.read_text(encoding="utf-8"))
    labels = pd.DataFrame({"img_name": [c["img_name"] for c in cases], "target": [i % 2 for i in range(CASES)]})
    labels.to_csv(root / "trainset_label.txt", index=False)
    SplitManifest(split="train", images=str(images), labels=str(root / "trainset_label.txt"), n_images=CASES,
                  n_fake=int(labels["target"].sum()), n_real=int((labels["target"] == 0).sum()),
                  labels_sha256="").write(root / "train.json")
    return root, cases, decoded


def test_every_fuzzed_image_decodes_or_fails_clearly(fuzzed):
    _, cases, decoded = fuzzed
    results = {(r["img_name"], r["resize"]): r for r in decoded["results"]}
    assert {name for name, _ in results} == {c["img_name"] for c in cases}
    crashes = [r for r in results.values() if r["outcome"] == "crash"]
    assert not crashes, f"{len(crashes)} crash(es), first:\n{crashes[0]['traceback']}"
    for r in results.values():
        if r["outcome"] == "ok":
            assert r["shape"] == [SIZE, SIZE, 3] and r["dtype"] == "uint8", r
        else:
            assert r["reason"].strip(), r
    slowest = max(results.values(), key=lambda r: r["seconds"])
    assert slowest["seconds"] < SECONDS_PER_IMAGE, slowest
    assert decoded["peak_rss_mb"] < PEAK_RSS_MB
    # the fuzz exercised both outcomes and every mutation (a generator that broke nothing, or
    # everything, would test little)
    outcomes = {r["outcome"] for r in results.values()}
    assert outcomes == {"ok", "error"}
    assert {c["mutation"] for c in cases} == set(MUTATIONS) or CASES < 100


def _build_cache(root, mode, resize):
    out = root / f"cache_{mode}"
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts/build_cache.py"), "--config-json",
         json.dumps({"cache": {"size": SIZE, "on_bad_image": mode, "resize": resize}}),
         "--split-manifest", str(root / "train.json"),
         "--out-dir", str(out), "--workers", "2", "--no-progress"],
        capture_output=True, text=True, timeout=600)
    return proc, out


@pytest.mark.parametrize("resize", ["squash", "native_crop"])
def test_build_cache_over_fuzzed_images_in_both_modes(fuzzed, resize):
    """The cache's verdict on each file is the decoder's (in its worker processes, in that mode)."""
    root, _, decoded = fuzzed
    results = [r for r in decoded["results"] if r["resize"] == resize]
    bad = sorted(r["img_name"] for r in results if r["outcome"] != "ok")
    good = sorted(r["img_name"] for r in results if r["outcome"] == "ok")

    proc, out = _build_cache(root, "error", resize)  # stops with every bad file counted, writes nothing
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.startswith(f"error: {len(bad)} of {CASES} images in ") and bad[0] in proc.stderr
    assert not out.exists()

    proc, out = _build_cache(root, "skip", resize)  # leaves them out and lists each in bad_images.csv
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert sorted(pd.read_csv(out / "bad_images.csv")["img_name"]) == bad
    assert sorted(pd.read_csv(out / "index.csv")["img_name"]) == good
    images = np.load(out / "images.npy", mmap_mode="r")
    assert images.shape == (len(good), SIZE, SIZE, 3) and images.dtype == np.uint8


# --------------------------------------------------------------------------- label files

HEADER = "img_name,target"


def _fuzzed_label_texts(rng: np.random.Generator, n: int):
    """Label files broken the ways they are met: encodings, line endings, NUL bytes, huge
    fields, random rows."""
    names = [f"{i:032x}.jpg" for i in range(5)]
    good = HEADER + "\n" + "".join(f"{name},{i % 2}\n" for i, name in enumerate(names))
    junk = ["", ",", "x", "2", "-1", "nan", "1.0", "true", " ", "\x00", "a,b,c", '"', "é", "../x.jpg", "x" * 100_000]
    for i in range(n):
        kind = i % 8
        if kind == 0:
            yield "utf16", good.encode("utf-16")
        elif kind == 1:
            yield "latin1", (good + "caf\xe9.jpg,1\n").encode("latin-1")
        elif kind == 2:  # mixed line endings, with a NUL byte somewhere
            text = good.replace("\n", rng.choice(["\r\n", "\r", "\n"]), int(rng.integers(1, 6)))
            at = int(rng.integers(0, len(text)))
            yield "nul", (text[:at] + "\x00" + text[at:]).encode()
        elif kind == 3:  # a huge field
            yield "huge", (good + "y" * int(rng.integers(10_000, 2_000_000)) + ".jpg,1\n").encode()
        else:  # random rows of junk cells
            rows = [",".join(rng.choice(junk, size=int(rng.integers(1, 4)))) for _ in range(int(rng.integers(0, 6)))]
            head = HEADER if rng.random() < 0.7 else rng.choice(junk)
            yield "rows", (head + "\n" + "\n".join(rows) + "\n").encode("utf-8", "surrogatepass")


def test_fuzzed_label_files_give_a_clear_error_naming_the_file(tmp_path):
    rng = np.random.default_rng(SEED)
    path = tmp_path / "trainset_label.txt"
    outcomes = {"ok": 0, "error": 0}
    for kind, data in _fuzzed_label_texts(rng, 400):
        path.write_bytes(data)
        try:
            df = read_labels(path)
        except DataError as exc:  # anything else is a traceback for the user
            assert str(path) in str(exc), (kind, str(exc)[:300])
            outcomes["error"] += 1
            continue
        assert list(df.columns[:2]) == ["img_name", "target"] and set(df["target"]) <= {0, 1}, kind
        outcomes["ok"] += 1
    assert outcomes["error"] > 0


# --------------------------------------------------------------------------- config values

def _leaf_keys(schema: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, sub in schema.get("properties", {}).items():
        if sub.get("type") == "object" and "properties" in sub:
            keys += _leaf_keys(sub, f"{prefix}{key}.")
        else:
            keys.append(f"{prefix}{key}")
    return keys


RANDOM_VALUES = [None, True, False, -1, 0, 1, 2**63, -1e308, float("nan"), float("inf"), 0.5, "", "x",
                 "auto", "ensemble", "x" * 10_000, [], [1, 2], [[]], {}, {"a": 1}, "\x00", "1e-3", "-5"]


def test_random_values_for_every_schema_key_are_accepted_or_named(tmp_path):
    """Every leaf key of the schema gets random YAML values: valid, or one ConfigError naming it."""
    rng = np.random.default_rng(SEED)
    keys = _leaf_keys(load_schema())
    assert len(keys) > 30
    refused = 0
    for key in keys:
        for value in rng.choice(np.array(RANDOM_VALUES, dtype=object), size=6, replace=False):
            raw: dict = {}
            node = raw
            *parents, last = key.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[last] = value
            # through a YAML file, as a user writes it (NaN and inf survive as .nan/.inf)
            path = tmp_path / "config.yaml"
            path.write_text(yaml.safe_dump(raw), encoding="utf-8")
            try:
                validate_config(yaml.safe_load(path.read_text(encoding="utf-8")))
            except ConfigError as exc:
                assert key in str(exc) or key.split(".")[0] in str(exc), (key, value, str(exc)[:300])
                refused += 1
    assert refused > len(keys)
