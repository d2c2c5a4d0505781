"""Model factory: names, parameter budget, offline weights (files and packaged)."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import save_file

from deepfake_workflow import models
from deepfake_workflow.errors import ConfigError
from deepfake_workflow.models import check_param_budget, count_params, create_model, data_config


def test_unknown_name_suggests_close_names():
    with pytest.raises(ConfigError) as err:
        create_model("resnet_18")
    assert "model.name" in str(err.value) and "resnet18" in str(err.value)
    with pytest.raises(ConfigError, match="efficientnet_b0"):
        count_params("efficentnet_b0")


def test_count_params_matches_real_model():
    model = create_model("test_resnet", num_classes=2)
    assert count_params("test_resnet") == sum(p.numel() for p in model.parameters())
    assert count_params("test_resnet", num_classes=10) > count_params("test_resnet", num_classes=2)


def test_count_params_of_giant_model_is_fast_and_budget_is_enforced():
    start = time.perf_counter()
    n = count_params("vit_giant_patch14_224")
    assert time.perf_counter() - start < 20  # meta device: no 4 GB of weights allocated
    assert n > 1_000_000_000
    with pytest.raises(ConfigError) as err:
        check_param_budget("vit_giant_patch14_224", 200_000_000)
    message = str(err.value)
    assert "vit_giant_patch14_224" in message and "model.max_params" in message
    assert f"{n:,}" in message and "200,000,000" in message
    assert check_param_budget("test_resnet", 200_000_000) == count_params("test_resnet")


def _backbone(state):
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


@pytest.mark.parametrize("suffix", [".pth", ".safetensors", ".bin"])
def test_local_weights_file_loads_backbone_and_reinitialises_head(tmp_path, suffix):
    torch.manual_seed(0)
    source = create_model("test_resnet", num_classes=1000).state_dict()
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in source.items()}, str(path))
    elif suffix == ".bin":  # a wrapped checkpoint with DDP key prefixes
        torch.save({"state_dict": {f"module.{k}": v for k, v in source.items()}}, path)
    else:
        torch.save(source, path)
    model = create_model("test_resnet", pretrained=str(path), num_classes=2)
    loaded = model.state_dict()
    for key, value in _backbone(source).items():
        assert torch.equal(loaded[key], value), key
    assert loaded["fc.weight"].shape == (2, source["fc.weight"].shape[1])


def test_weights_of_another_architecture_are_rejected(tmp_path):
    path = tmp_path / "effnet.pth"
    torch.save(create_model("test_efficientnet").state_dict(), path)
    with pytest.raises(ConfigError, match="do not fit"):
        create_model("test_resnet", pretrained=str(path))


def test_missing_or_wrong_weights_file_names_the_key_and_path(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(ConfigError) as err:
        create_model("test_resnet", pretrained=str(missing))
    assert "model.pretrained" in str(err.value) and str(missing) in str(err.value)
    text = tmp_path / "weights.txt"
    text.write_text("hello")
    with pytest.raises(ConfigError, match="not a weights file"):
        create_model("test_resnet", pretrained=str(text))
    with pytest.raises(ConfigError, match="package:efficientnet_lite0"):
        create_model("test_resnet", pretrained="package:resnet18")


def test_packaged_lite0_weights_convert_and_load():
    source = torch.load(models.lite0_package_weights_path(), map_location="cpu", weights_only=True)
    model = create_model("efficientnet_lite0", pretrained="package:efficientnet_lite0", num_classes=2)
    state = model.state_dict()
    assert torch.equal(state["conv_stem.weight"], source["_conv_stem.weight"])
    assert torch.equal(state["blocks.6.0.conv_pwl.weight"], source["_blocks.15._project_conv.weight"])
    assert torch.equal(state["bn2.running_var"], source["_bn1.running_var"])
    assert state["classifier.weight"].shape == (2, 1280)
    # the new 2-class head starts small (timm's own init gives logits of +-20 here)
    torch.manual_seed(0)
    with torch.no_grad():
        logits = model.eval()(torch.rand(2, 3, 64, 64) * 2 - 1)
    assert logits.abs().max() < 1.0
    # these weights expect inputs in [-1, 1], not ImageNet mean/std
    assert data_config(model) == {"mean": [0.5] * 3, "std": [0.5] * 3}
    assert data_config(create_model("efficientnet_lite0"))["mean"] == pytest.approx([0.485, 0.456, 0.406])


def test_packaged_weights_only_for_their_architecture_and_checksum(monkeypatch):
    with pytest.raises(ConfigError, match="only fits model.name='efficientnet_lite0'"):
        create_model("resnet18", pretrained="package:efficientnet_lite0")
    monkeypatch.setattr(models, "LITE0_PACKAGE_SHA256", "0" * 64)
    with pytest.raises(ConfigError, match="sha256"):
        create_model("efficientnet_lite0", pretrained="package:efficientnet_lite0")


def test_hub_weights_offline_give_a_clear_error(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path), "TORCH_HOME": str(tmp_path)}
    code = ("from deepfake_workflow.models import create_model\n"
            "from deepfake_workflow.errors import ConfigError\n"
            "try:\n    create_model('test_resnet', pretrained=True)\n"
            "except ConfigError as e:\n    print('CONFIGERROR', e)\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert "CONFIGERROR" in out.stdout, out.stderr
    assert "local weights file" in out.stdout
