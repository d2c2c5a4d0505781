"""What produced a result: package versions, platform, device, git commit, and hashes of the
config and the data manifest. Recorded in every best.pt and in results/reports/provenance.json
(never in metrics.json, which stays byte-identical across same-seed runs).

Collecting provenance never fails a stage: what cannot be found is "unknown" (not a git
checkout, no git program) or "not installed" (a package that is absent).
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

# distribution names, as importlib.metadata knows them
PACKAGES = ("torch", "timm", "numpy", "Pillow", "snakemake", "dvc", "deepfake-workflow")
UNKNOWN = "unknown"
NOT_INSTALLED = "not installed"


def package_versions(names=PACKAGES) -> dict[str, str]:
    """{"python": "3.11.7", "torch": "2.4.1", ...}; "not installed" for an absent package."""
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = NOT_INSTALLED
    return versions


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, sysctl on macOS, else platform.processor())."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        out = _run(["sysctl", "-n", "machdep.cpu.brand_string"])
        if out:
            return out
    return platform.processor() or platform.machine() or UNKNOWN


def cuda_devices() -> list[str]:
    """Names of the visible CUDA devices ([] without torch, CUDA or a GPU)."""
    try:
        import torch

        if not torch.cuda.is_available():
            return []
        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # a broken driver must not fail a stage that only records it
        return []


def _run(cmd: list[str], cwd: Path | None = None) -> str | None:
    """stdout of a command, stripped; None when it cannot run or fails."""
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=20,
                              env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def project_dir() -> Path | None:
    """The project checkout the library runs from (src layout: <project>/src/deepfake_workflow);
    None for an installed wheel, whose site-packages may lie inside some unrelated repository."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() else None


def git_state(directory: Path | None = None) -> dict:
    """{"commit": sha, "dirty": bool} of the checkout at `directory` (default: project_dir());
    "unknown" for both when it is not a git checkout or git is missing."""
    directory = project_dir() if directory is None else Path(directory)
    if directory is None or not directory.is_dir():
        return {"commit": UNKNOWN, "dirty": UNKNOWN}
    commit = _run(["git", "rev-parse", "HEAD"], cwd=directory)
    if not commit:
        return {"commit": UNKNOWN, "dirty": UNKNOWN}
    status = _run(["git", "status", "--porcelain", "--untracked-files=normal"], cwd=directory)
    return {"commit": commit, "dirty": UNKNOWN if status is None else bool(status)}


def canonical_json(obj) -> str:
    """One text per value: sorted keys, no whitespace, UTF-8 as is."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def config_sha256(config: Mapping) -> str:
    """sha256 of the canonical JSON of a (validated, effective) config."""
    return hashlib.sha256(canonical_json(config).encode("utf-8")).hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def environment(device: str | None = None, directory: Path | None = None) -> dict:
    """What every output records: versions, platform, devices, git. `device`: the torch device
    the stage used ("cpu", "cuda"), when it used one."""
    info = {
        "versions": package_versions(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cuda_devices": cuda_devices(),
        "git": git_state(directory),
    }
    if device is not None:
        info["device"] = str(device)
        info["device_name"] = device_name(str(device), info)
    return info


def device_name(device: str, info: Mapping | None = None) -> str:
    """The model name of the device a stage ran on: the CUDA device's or the CPU's."""
    info = info or {}
    if device.startswith("cuda"):
        names = info.get("cuda_devices") if "cuda_devices" in info else cuda_devices()
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        return names[index] if index < len(names) else UNKNOWN
    return info.get("cpu") or cpu_model()


def collect(*, config: Mapping | None = None, manifest: str | os.PathLike | None = None,
            device: str | None = None, directory: Path | None = None) -> dict:
    """environment() plus the sha256 of the effective config and of the data manifest file."""
    info = environment(device, directory)
    if config is not None:
        info["config_sha256"] = config_sha256(config)
    if manifest is not None:
        info["data_manifest"] = str(manifest)
        info["data_manifest_sha256"] = file_sha256(manifest)
    return info


def flat_items(info: Mapping) -> list[tuple[str, str]]:
    """(label, value) rows for a table: nested keys joined with a space."""
    rows = []
    for key, value in info.items():
        if isinstance(value, Mapping):
            rows += [(f"{key} {k}", v) for k, v in flat_items(value)]
        elif isinstance(value, (list, tuple)):
            rows.append((key, ", ".join(map(str, value)) or "none"))
        else:
            rows.append((key, str(value)))
    return rows
