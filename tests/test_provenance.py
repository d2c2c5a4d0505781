"""provenance.py: versions, platform, device, git state and hashes; never fails a stage."""
import argparse
import hashlib
import json
import platform
import subprocess

import pytest
import torch
import yaml
from conftest import REPO, TINY_CONFIG

from deepfake_workflow import provenance
from deepfake_workflow.checkpoint import save_checkpoint
from deepfake_workflow.cli import add_config_args, config_from_args
from deepfake_workflow.config import validate_config


def test_environment_names_versions_platform_and_devices():
    info = provenance.environment(device="cpu")
    versions = info["versions"]
    assert versions["python"] == platform.python_version()
    assert versions["torch"] == torch.__version__.split("+")[0] or versions["torch"] == torch.__version__
    assert set(versions) >= {"python", "torch", "timm", "numpy", "Pillow", "snakemake", "dvc"}
    assert all(v and v != "not installed" for k, v in versions.items() if k in ("numpy", "Pillow", "timm"))
    assert info["platform"] == platform.platform() and info["cpu"]
    assert info["device"] == "cpu" and info["device_name"] == info["cpu"]
    assert isinstance(info["cuda_devices"], list)
    json.dumps(info)  # plain JSON


def test_absent_package_is_not_installed():
    assert provenance.package_versions(["no-such-distribution-xyz"])["no-such-distribution-xyz"] == "not installed"


def test_git_commit_and_dirty_state(tmp_path):
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"}
    (tmp_path / "a.txt").write_text("1")
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "x"]):
        subprocess.run(cmd, cwd=tmp_path, check=True, capture_output=True, env={**env, "PATH": "/usr/bin:/bin"})
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert provenance.git_state(tmp_path) == {"commit": head, "dirty": False}
    (tmp_path / "a.txt").write_text("2")
    assert provenance.git_state(tmp_path) == {"commit": head, "dirty": True}


def test_not_a_checkout_or_no_git_is_unknown(tmp_path, monkeypatch):
    unknown = {"commit": "unknown", "dirty": "unknown"}
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert provenance.git_state(tmp_path) == unknown
    assert provenance.git_state(tmp_path / "absent") == unknown
    monkeypatch.setenv("PATH", str(tmp_path))  # no git program at all
    assert provenance.git_state(REPO) == unknown


def test_hashes_are_canonical(tmp_path):
    assert provenance.config_sha256({"a": 1, "b": {"c": [1, 2]}}) == provenance.config_sha256({"b": {"c": [1, 2]},
                                                                                               "a": 1})
    assert provenance.config_sha256({"a": 1}) != provenance.config_sha256({"a": 2})
    (tmp_path / "m.json").write_bytes(b"{}\n")
    assert provenance.file_sha256(tmp_path / "m.json") == hashlib.sha256(b"{}\n").hexdigest()


def test_report_stage_hashes_the_same_effective_config_under_both_engines(tmp_path):
    """Snakemake passes the whole validated config as --config-json, dvc.yaml the file plus --keys."""
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(TINY_CONFIG))
    full = validate_config(TINY_CONFIG)
    parser = argparse.ArgumentParser()
    add_config_args(parser)
    snake = config_from_args(parser.parse_args(["--config-json", json.dumps(full)]))
    dvc = config_from_args(parser.parse_args(["--config", str(tmp_path / "config.yaml"), "--keys", ",".join(full)]))
    assert provenance.config_sha256(snake) == provenance.config_sha256(dvc) == provenance.config_sha256(full)


def test_every_checkpoint_records_its_provenance(tmp_path):
    path = tmp_path / "best.pt"
    save_checkpoint(path, state_dict={"w": torch.zeros(1)}, model_name="m", num_classes=2, mean=[0.5] * 3,
                    std=[0.5] * 3, image_size=8, epoch=1, val_auc=0.5, fold=0, pretrained=False)
    saved = torch.load(path, weights_only=True)  # still loads without pickled code
    assert saved["provenance"]["versions"]["torch"] == provenance.package_versions()["torch"]
    assert saved["provenance"]["git"]["commit"]


@pytest.mark.parametrize("value, text", [(["a", "b"], "a, b"), ([], "none")])
def test_flat_items(value, text):
    assert provenance.flat_items({"x": {"y": value}}) == [("x y", text)]
