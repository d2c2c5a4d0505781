"""The GPU path's branches, run on the CPU: precisions (bf16, fp16 with its gradient scaler),
channels_last, torch.compile and its fallback, gradient clipping, and resuming with a scaler."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import torch
from test_training import MODEL, outputs, run, write_tiny_cache

from deepfake_workflow.checkpoint import FoldState, load_checkpoint
from deepfake_workflow.errors import ConfigError
from deepfake_workflow.inference import autocast, resolve_precision
from deepfake_workflow.models import create_model
from deepfake_workflow.training import (
    _restore_training_states,
    _with_training_states,
    make_step_context,
    resolve_train_cfg,
    train_one_epoch,
)

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return write_tiny_cache(tmp_path_factory.mktemp("cache"))


def context(train: dict, seed: int = 0):
    """A step context of the tiny test model on the CPU."""
    torch.manual_seed(seed)
    model = create_model(MODEL["name"], pretrained=False, num_classes=2)
    return make_step_context(model, resolve_train_cfg({"device": "cpu", **train}), CPU, steps_per_epoch=4)


def ready_batches(n: int = 2, size: int = 32, seed: int = 0) -> list:
    g = torch.Generator().manual_seed(seed)
    return [{"x": torch.randn(8, 3, size, size, generator=g), "target": torch.arange(8) % 2} for _ in range(n)]


def test_precision_choices():
    cuda = torch.device("cuda")  # a device object only: nothing runs on it
    assert resolve_precision("auto", CPU) == "fp32"
    assert resolve_precision("auto", cuda, bf16_ok=True) == "bf16"
    assert resolve_precision("auto", cuda, bf16_ok=False) == "fp16"
    for explicit in ("bf16", "fp16", "fp32"):
        assert resolve_precision(explicit, CPU) == explicit
    with pytest.raises(ConfigError, match="predict.precision"):
        resolve_precision("fp8", CPU, key="predict.precision")


@pytest.mark.parametrize("precision,dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16),
                                             ("fp32", torch.float32)])
def test_autocast_runs_each_precision_on_the_cpu(precision, dtype):
    layer = torch.nn.Conv2d(3, 4, 3)
    with autocast(CPU, precision):
        assert layer(torch.randn(1, 3, 8, 8)).dtype == dtype


def test_fp16_trains_on_the_cpu_with_a_scaler(cache, tmp_path):
    metrics = run(cache, tmp_path, {"precision": "fp16", "channels_last": False})
    history, oof, best = outputs(tmp_path)
    assert metrics["precision"] == "fp16"
    assert np.isfinite(history["train_loss"]).all() and np.isfinite(history["val_loss"]).all()
    assert oof["y_pred"].between(0, 1).all()
    model, _ = load_checkpoint(tmp_path / "out" / "best.pt")  # plain fp32 weights, loadable
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_bf16_and_channels_last_train_on_the_cpu():
    ctx = context({"precision": "bf16", "channels_last": True})
    assert ctx.channels_last and not ctx.scaler.is_enabled()
    conv = next(m for m in ctx.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    result = train_one_epoch(ctx, ready_batches())
    assert np.isfinite(result["loss"]) and result["images"] == 16


def test_scaler_state_is_saved_and_restored_for_resume():
    ctx = context({"precision": "fp16"})
    assert ctx.scaler.is_enabled()
    train_one_epoch(ctx, ready_batches())
    ctx.scaler.update(new_scale=512.0)  # as after overflows
    saved = _with_training_states(FoldState(), ctx)
    assert saved.scaler["scale"] == 512.0
    fresh = context({"precision": "fp16"})
    assert fresh.scaler.get_scale() != 512.0
    fresh.model.load_state_dict(saved.model)
    _restore_training_states(fresh, saved)
    assert fresh.scaler.get_scale() == 512.0
    assert _with_training_states(FoldState(), context({"precision": "fp32"})).scaler is None


class Killed(Exception):
    pass


def test_fp16_resume_after_kill_equals_uninterrupted_run(cache, tmp_path):
    train = {"precision": "fp16", "epochs": 2, "ema": False}
    run(cache, tmp_path / "full", train)

    def kill(row):
        raise Killed
    with pytest.raises(Killed):
        run(cache, tmp_path / "resumed", train, on_epoch_end=kill)
    state = torch.load(tmp_path / "resumed" / "state" / "last.pt", weights_only=True)
    assert state["scaler"]["scale"] > 0
    run(cache, tmp_path / "resumed", train)
    h1, o1, _ = outputs(tmp_path / "full")
    h2, o2, _ = outputs(tmp_path / "resumed")
    pd.testing.assert_frame_equal(h1[["train_loss", "val_loss"]], h2[["train_loss", "val_loss"]])
    pd.testing.assert_frame_equal(o1, o2)


@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_grad_clip_sees_unscaled_gradients_and_clips_them(monkeypatch, precision):
    seen = []
    real_clip = torch.nn.utils.clip_grad_norm_

    def spy(parameters, max_norm, *args, **kwargs):
        parameters = list(parameters)
        norm = real_clip(parameters, max_norm, *args, **kwargs)
        after = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in parameters if p.grad is not None]))
        seen.append((float(norm), float(after), max_norm))
        return norm
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    reference = context({"precision": "fp32", "lr": 1e-12, "warmup_epochs": 0, "grad_clip": 1e9})
    train_one_epoch(reference, ready_batches(1))
    ctx = context({"precision": precision, "lr": 1e-12, "warmup_epochs": 0, "grad_clip": 1e-3})
    train_one_epoch(ctx, ready_batches(1))
    (true_norm, _, _), (norm, after, max_norm) = seen
    assert max_norm == 1e-3
    # the norm clipping saw is the true one (fp16: not multiplied by the loss scale 65536)
    assert norm == pytest.approx(true_norm, rel=0.05)
    assert after <= 1e-3 * 1.01


def test_compile_failing_at_compile_time_falls_back_to_eager(monkeypatch, caplog):
    def broken(model, **kwargs):
        raise RuntimeError("backend 'nope' is not available\nmore detail")
    monkeypatch.setattr(torch, "compile", broken)
    with caplog.at_level(logging.WARNING, logger="deepfake_workflow"):
        ctx = context({"compile": True})
    assert not ctx.compiled
    assert np.isfinite(train_one_epoch(ctx, ready_batches())["loss"])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["train.compile: torch.compile failed (RuntimeError: backend 'nope' is not available); "
                        "training continues uncompiled (eager)"]


def test_compile_failing_at_first_call_falls_back_to_eager(monkeypatch, caplog):
    calls = []

    def compiled_that_fails(model, **kwargs):
        def forward(x):
            calls.append(1)
            raise RuntimeError("inductor: no C++ compiler found")
        return forward
    monkeypatch.setattr(torch, "compile", compiled_that_fails)
    with caplog.at_level(logging.WARNING, logger="deepfake_workflow"):
        ctx = context({"compile": True})
        assert ctx.compiled
        result = train_one_epoch(ctx, ready_batches(3))
    assert calls == [1] and not ctx.compiled  # tried once, then eager for good
    assert result["images"] == 24 and np.isfinite(result["loss"])
    assert sum("torch.compile failed" in r.getMessage() for r in caplog.records) == 1


def test_compiled_training_writes_a_plain_checkpoint(cache, tmp_path, monkeypatch):
    """A working compile (the light 'eager' backend of torch.compile): same state-dict keys."""
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kw: real_compile(model, backend="eager"))
    metrics = run(cache, tmp_path, {"compile": True, "epochs": 1})
    assert np.isfinite(metrics["best_val_auc"])
    model, _ = load_checkpoint(tmp_path / "out" / "best.pt")
    assert not any(k.startswith("_orig_mod") for k in model.state_dict())
