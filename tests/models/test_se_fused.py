"""Fused SE kernels (scseg/models/se_fused.py): the same function as the ATen blocks, in both memory layouts, 2D
and 3D, with correct gradients, thread-count independent results, and a clean fallback when they cannot build."""

from __future__ import annotations

import logging
import shutil

import pytest
import torch

from scseg.models import create_model, create_se, se_fused

pytestmark = pytest.mark.skipif(
    shutil.which("c++") is None and shutil.which("g++") is None,
    reason="no C++ compiler: the fused kernels cannot build",
)

VARIANTS = [("cse", "add"), ("sse", "add"), ("scse", "add")]
LAYOUTS = {2: (torch.contiguous_format, torch.channels_last), 3: (torch.contiguous_format, torch.channels_last_3d)}


@pytest.fixture(scope="module", autouse=True)
def kernels():
    ok, why = se_fused.kernels_available()
    assert ok, f"a C++ compiler is present but the fused SE kernels did not build: {why}"


def _pair(name: str, aggregation: str, channels: int = 6, dims: int = 2, dtype=torch.float64):
    """The same block (same weights) with ATen and with fused kernels."""
    blocks = []
    for kernels in ("eager", "fused"):
        torch.manual_seed(0)
        block = create_se(name, channels, spatial_dims=dims, aggregation=aggregation, kernels=kernels)
        blocks.append(block.to(dtype))
    return blocks


def _run(block, base, weights, memory_format):
    block.zero_grad(set_to_none=True)
    x = base.clone(memory_format=memory_format).requires_grad_(True)
    out = block(x)
    (out * weights).sum().backward()
    return out.detach(), x.grad, [p.grad.clone() for p in block.parameters()]


# 6 channels: only the kernels' scalar tail; 37: two 16-channel chunks of the projection's partial sums and a tail
@pytest.mark.parametrize("channels", [6, 37])
@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize(("name", "aggregation"), VARIANTS)
def test_fused_equals_aten_in_both_layouts(name, aggregation, dims, channels):
    eager, fused = _pair(name, aggregation, channels=channels, dims=dims)
    shape = (2, channels, 5, 7) if dims == 2 else (2, channels, 3, 4, 5)
    base, weights = torch.randn(shape, dtype=torch.float64), torch.randn(shape, dtype=torch.float64)
    for memory_format in LAYOUTS[dims]:
        expected = _run(eager, base, weights, memory_format)
        got = _run(fused, base, weights, memory_format)
        torch.testing.assert_close(got[0], expected[0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(got[1], expected[1], rtol=1e-12, atol=1e-12)
        for a, b in zip(got[2], expected[2], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
        # the output and the input gradient keep the input's layout (a channels-last network stays channels-last)
        assert got[0].is_contiguous(memory_format=memory_format)
        assert got[1].is_contiguous(memory_format=memory_format)


@pytest.mark.parametrize("memory_format", LAYOUTS[2])
@pytest.mark.parametrize(("name", "aggregation"), VARIANTS)
def test_fused_gradcheck(name, aggregation, memory_format):
    _, fused = _pair(name, aggregation, channels=4)
    x = torch.randn(2, 4, 3, 5, dtype=torch.float64).contiguous(memory_format=memory_format).requires_grad_(True)
    assert torch.autograd.gradcheck(fused, (x,))


def test_fused_float32_at_training_size_matches_aten():
    """Many pixels per block and several blocks per sample (the per-block partial sums), float32 tolerances."""
    eager, fused = _pair("scse", "add", channels=16, dtype=torch.float32)
    base = torch.relu(torch.randn(3, 16, 96, 80))
    weights = torch.randn_like(base)
    for memory_format in LAYOUTS[2]:
        expected, got = _run(eager, base, weights, memory_format), _run(fused, base, weights, memory_format)
        torch.testing.assert_close(got[0], expected[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got[1], expected[1], rtol=1e-4, atol=1e-5)
        for a, b in zip(got[2], expected[2], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)


def test_frozen_excitation_layers_get_no_gradient():
    """Fine-tuning with a frozen first excitation layer: it gets no gradient, the others the same as with ATen."""
    eager, fused = _pair("scse", "add", channels=20)
    for block in (eager, fused):
        block.cse.fc1.weight.requires_grad_(False)
    base, weights = torch.randn(2, 20, 6, 5, dtype=torch.float64), torch.randn(2, 20, 6, 5, dtype=torch.float64)
    for block in (eager, fused):
        x = base.clone().requires_grad_(True)
        (block(x) * weights).sum().backward()
        block.x_grad = x.grad
    assert fused.cse.fc1.weight.grad is None
    torch.testing.assert_close(fused.x_grad, eager.x_grad, rtol=1e-12, atol=1e-12)
    for (name, a), b in zip(fused.named_parameters(), eager.parameters(), strict=True):
        if a.requires_grad:
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-12, atol=1e-12, msg=name)


def test_fused_results_do_not_depend_on_the_thread_count():
    _, fused = _pair("scse", "add", channels=16, dtype=torch.float32)
    base = torch.relu(torch.randn(2, 16, 64, 72)).contiguous(memory_format=torch.channels_last)
    weights = torch.randn_like(base)
    previous = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            results.append(_run(fused, base, weights, torch.channels_last))
    finally:
        torch.set_num_threads(previous)
    (out1, grad1, params1), (out2, grad2, params2) = results
    assert torch.equal(out1, out2) and torch.equal(grad1, grad2)
    assert all(torch.equal(a, b) for a, b in zip(params1, params2, strict=True))


def test_inputs_the_kernels_do_not_take_use_aten():
    """bfloat16, non-dense strides and the max aggregation go through ATen, with the same results as eager."""
    eager, fused = _pair("scse", "add", dtype=torch.float32)
    x = torch.randn(2, 6, 8, 10)
    for odd in (x.to(torch.bfloat16), x[:, :, ::2]):
        eager_odd, fused_odd = (b.to(odd.dtype) for b in (eager, fused))
        assert se_fused.layout_of(odd) is None
        torch.testing.assert_close(fused_odd(odd), eager_odd(odd), rtol=0, atol=0)
    eager_max, fused_max = _pair("scse", "max", dtype=torch.float32)
    torch.testing.assert_close(fused_max(x), eager_max(x), rtol=0, atol=0)


def test_networks_train_the_same_with_fused_kernels():
    """A whole U-Net with scSE: same outputs and gradients (float rounding apart) with either implementation."""
    torch.manual_seed(0)
    x = torch.randn(2, 1, 32, 32).contiguous(memory_format=torch.channels_last)
    grads = []
    for kernels in ("eager", "fused"):
        torch.manual_seed(0)
        model = create_model("unet", 3, filters=8, se="scse", se_kernels=kernels).to(memory_format=torch.channels_last)
        model(x).square().mean().backward()
        grads.append([p.grad for p in model.parameters()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-5)


def test_modes_validate_and_fall_back(monkeypatch, caplog):
    with pytest.raises(ValueError, match="trainer.se_kernels.*valid choices: auto, fused, eager"):
        se_fused.resolve_mode("fast")
    with pytest.raises(ValueError, match="se_kernels"):
        create_model("unet", 2, filters=4, se="none", se_kernels="fast")
    assert se_fused.resolve_mode("eager") == "eager"
    assert se_fused.resolve_mode("auto") == "fused"
    monkeypatch.setattr(se_fused, "_build", {"ok": False, "why": "OSError: no compiler"})
    with caplog.at_level(logging.WARNING, logger="scseg.models.se_fused"):
        assert se_fused.resolve_mode("auto") == "eager"
    assert "no compiler" in caplog.text
    with pytest.raises(RuntimeError, match="trainer.se_kernels=fused.*no compiler"):
        se_fused.resolve_mode("fused")
    block = create_se("scse", 4, kernels="auto")
    assert block.kernels == "eager"


def _lock_in(folder, age_s: float):
    import os
    import time

    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / "lock"
    lock.touch()
    os.utime(lock, (time.time() - age_s, time.time() - age_s))
    return lock


def test_a_fresh_lock_held_by_a_stuck_build_cannot_hang(tmp_path, monkeypatch):
    """torch's build lock waits for ever; a lock younger than the deadline (a build that might still be running)
    makes the build child wait, and the child is killed at the deadline: the caller gets the ATen path."""
    import time

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr(se_fused, "_build", {})
    lock = _lock_in(se_fused.build_directory(), age_s=0)
    start = time.perf_counter()
    ok, why = se_fused.kernels_available(timeout_s=4)
    assert not ok and "longer than 4 s" in why, why
    assert time.perf_counter() - start < 30
    assert not lock.exists(), "the lock that outlived the deadline is stale now and removed"
    assert se_fused.resolve_mode("auto") == "eager"


def test_a_stale_lock_is_removed_and_the_kernels_load(tmp_path):
    """A lock older than the deadline (a build killed by SIGKILL, the OOM killer, a preemption) is removed and the
    library beside it loads. Run in a fresh process: the operators register once per process."""
    import os
    import subprocess
    import sys

    built = se_fused._build["library"]  # the module fixture built it
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(tmp_path)}
    code = (
        "import shutil, sys; from scseg.models import se_fused as f; d = f.build_directory(); "
        "d.mkdir(parents=True); shutil.copy(sys.argv[1], d); "
        "import os, time; l = d / 'lock'; l.touch(); os.utime(l, (time.time() - 600, time.time() - 600)); "
        "ok, why = f.kernels_available(timeout_s=60); print(ok, l.exists(), why)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(built)], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("True False loaded"), out.stdout + out.stderr
    assert "stale build lock" in out.stderr


def test_the_default_never_builds(monkeypatch):
    """``trainer.se_kernels`` defaults to eager: building a run's SE model never touches the C++ build."""
    from scseg.config.compose import compose_train_config
    from scseg.engine.run import build_model
    from scseg.engine.spec import RunSpec
    from scseg.models.se import se_kernel_path

    def refuse(*_args, **_kwargs):
        raise AssertionError("the default configuration tried to build the fused kernels")

    monkeypatch.setattr(se_fused, "kernels_available", refuse)
    cfg = compose_train_config(["model=unet", "width=small", "se=scse"])
    assert cfg.trainer.se_kernels == "eager"
    model = build_model(RunSpec.from_config(cfg), 3, 1)
    assert se_kernel_path(model) == "aten"


def test_kernel_path_says_what_runs():
    from scseg.models.se import se_kernel_path

    assert se_kernel_path(create_model("unet", 2, filters=4, se="none")) == "none"
    assert se_kernel_path(create_model("unet", 2, filters=4, se="sse", se_kernels="fused")) == "fused"
    assert (
        se_kernel_path(create_model("unet", 2, filters=4, se="scse", se_aggregation="max", se_kernels="fused"))
        == "aten"
    )
