"""SE blocks: gate semantics, aggregation formulas, gradients, factory errors."""

from __future__ import annotations

import pytest
import torch

from scseg.models import create_se
from scseg.models.se import AGGREGATIONS, SE_VARIANTS, ChannelSE, ConcurrentSE, SpatialSE
from scseg.se_options import module_spec


def _signed_input(dims: int = 2, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    shape = (2, 6, 5, 7) if dims == 2 else (2, 6, 3, 4, 5)
    return torch.randn(shape, generator=g, dtype=dtype)


def test_none_is_parameter_free_identity():
    block = create_se("none", 16)
    x = _signed_input()
    assert sum(p.numel() for p in block.parameters()) == 0
    assert torch.equal(block(x), x)


@pytest.mark.parametrize("name", SE_VARIANTS)
def test_factory_returns_new_instance_every_call(name):
    # 16 channels: CBAM's default r = 16; a skip module also takes its gating signal's channels
    gating = 8 if module_spec(name).placement == "skip" else None
    a, b = create_se(name, 16, gating_channels=gating), create_se(name, 16, gating_channels=gating)
    assert a is not b
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert pa is not pb


def test_cse_gate_constant_over_space():
    block = ChannelSE(6, reduction=2)
    x = _signed_input()
    gate = block.gate(x)
    assert gate.shape == (2, 6, 1, 1)
    assert torch.all((gate > 0) & (gate < 1))
    torch.testing.assert_close(block(x), x * gate)
    # Two spatially different inputs with the same channel means get the same gate.
    shuffled = x.flatten(2)[:, :, torch.randperm(35)].reshape_as(x)
    torch.testing.assert_close(block.gate(shuffled), gate)


def test_sse_gate_constant_over_channels():
    block = SpatialSE(6)
    x = _signed_input()
    gate = block.gate(x)
    assert gate.shape == (2, 1, 5, 7)
    torch.testing.assert_close(block(x), x * gate)


def test_cse_matches_formula():
    block = ChannelSE(6, reduction=2)
    x = _signed_input()
    z = x.mean(dim=(2, 3))
    expected = torch.sigmoid(block.fc2(torch.relu(block.fc1(z))))[:, :, None, None]
    torch.testing.assert_close(block.gate(x), expected)


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_aggregation_matches_formula(aggregation):
    torch.manual_seed(0)
    block = ConcurrentSE(6, reduction=2, aggregation=aggregation)
    x = _signed_input()
    xc = x * block.cse.gate(x)
    xs = x * block.sse.gate(x)
    expected = {
        "add": xc + xs,
        "max": torch.maximum(xc, xs),
        "mul": xc * xs,
        "concat": block.fuse(torch.cat([xc, xs], dim=1)) if aggregation == "concat" else None,
    }[aggregation]
    torch.testing.assert_close(block(x), expected)


def test_max_is_not_x_times_max_gate_on_signed_input():
    block = ConcurrentSE(6, aggregation="max")
    x = _signed_input()
    naive = x * torch.maximum(block.cse.gate(x), block.sse.gate(x))
    assert not torch.allclose(block(x), naive)


def test_aggregations_differ():
    x = _signed_input()
    outputs = []
    for aggregation in AGGREGATIONS:
        torch.manual_seed(0)
        outputs.append(ConcurrentSE(6, aggregation=aggregation)(x))
    for i in range(len(outputs)):
        for j in range(i + 1, len(outputs)):
            assert not torch.allclose(outputs[i], outputs[j]), (AGGREGATIONS[i], AGGREGATIONS[j])


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_gradcheck_scse(aggregation):
    torch.manual_seed(0)
    block = ConcurrentSE(4, reduction=2, aggregation=aggregation).double()
    x = torch.randn(1, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(block, (x,))


@pytest.mark.parametrize("name", ["cse", "sse"])
def test_gradcheck_single(name):
    torch.manual_seed(0)
    block = create_se(name, 4).double()
    x = torch.randn(1, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(block, (x,))


@pytest.mark.parametrize("name", ["cse", "sse", "scse"])
def test_3d_blocks_on_5d_input(name):
    block = create_se(name, 6, spatial_dims=3)
    x = _signed_input(dims=3)
    y = block(x)
    assert y.shape == x.shape
    if name == "cse":
        assert block.gate(x).shape == (2, 6, 1, 1, 1)
    if name == "sse":
        assert block.gate(x).shape == (2, 1, 3, 4, 5)


def test_scse_parameter_count_paper_width():
    # cSE: 64*32+32 + 32*64+64 = 4192; sSE: 64+1 = 65.
    assert sum(p.numel() for p in create_se("scse", 64).parameters()) == 4257


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(name="sce", channels=8), "none, cse, sse, scse"),
        (dict(name="scse", channels=8, aggregation="avg"), "add, max, mul, concat"),
        (dict(name="cse", channels=2, reduction=4), "channels // reduction >= 1"),
        (dict(name="scse", channels=8, spatial_dims=4), "spatial_dims must be 2 or 3"),
    ],
)
def test_bad_arguments_fail_with_message(kwargs, message):
    with pytest.raises(ValueError, match=message):
        create_se(**kwargs)


def _saved_bytes(module, x) -> int:
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(x).sum()
    return sum(storages.values())


def test_scse_keeps_few_full_size_tensors_for_backward():
    """add keeps only x (plus tiny gates); max keeps less than max(x*c, x*s) would (3 full-size tensors)."""
    x = torch.randn(2, 16, 32, 32, requires_grad=True)
    full = x.numel() * x.element_size()
    assert _saved_bytes(ConcurrentSE(16, aggregation="add"), x) < 1.1 * full
    assert _saved_bytes(ConcurrentSE(16, aggregation="max"), x) < 2.5 * full


_LAYOUTS = {2: torch.channels_last, 3: torch.channels_last_3d}


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("variant", ["cse", "sse", *(f"scse-{a}" for a in AGGREGATIONS)])
def test_channels_last_gates_match_nchw_and_keep_the_layout(variant, dims):
    """The gates reduce channels-last inputs on an (N, P, C) view (their own code path): same values and gradients
    (input and parameters) as on NCHW, and the output and input gradient stay channels-last."""
    name, _, aggregation = variant.partition("-")
    torch.manual_seed(0)
    block = create_se(name, 6, spatial_dims=dims, aggregation=aggregation or "add").double()
    shape = (2, 6, 5, 7) if dims == 2 else (2, 6, 3, 4, 5)
    base = torch.randn(shape, dtype=torch.float64)
    weights = torch.randn(shape, dtype=torch.float64)
    results = []
    for memory_format in (torch.contiguous_format, _LAYOUTS[dims]):
        block.zero_grad()
        x = base.clone(memory_format=memory_format).requires_grad_(True)
        out = block(x)
        (out * weights).sum().backward()
        params = [p.grad.clone() for p in block.parameters()]
        results.append((out.detach(), x.grad, params))
        # concat's fusion is ATen's 1x1 convolution, whose output layout is ATen's choice (NCDHW in 3D)
        if memory_format is not torch.contiguous_format and aggregation != "concat":
            assert out.is_contiguous(memory_format=memory_format)
            assert x.grad.is_contiguous(memory_format=memory_format)
    (out_a, grad_a, params_a), (out_b, grad_b, params_b) = results
    torch.testing.assert_close(out_b, out_a, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad_b, grad_a, rtol=1e-12, atol=1e-12)
    for a, b in zip(params_a, params_b, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("variant", ["cse", "sse", *(f"scse-{a}" for a in ("add", "max", "mul"))])
def test_gradcheck_channels_last(variant):
    name, _, aggregation = variant.partition("-")
    torch.manual_seed(0)
    block = create_se(name, 4, aggregation=aggregation or "add").double()
    x = torch.randn(2, 4, 3, 5, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    assert torch.autograd.gradcheck(block, (x.requires_grad_(True),))


COMPILED_BLOCKS = [("cse", "add"), ("sse", "add"), ("scse", "add"), ("scse", "max"), ("scse", "mul")]


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("variant,aggregation", COMPILED_BLOCKS)
def test_blocks_take_the_literal_formulas_while_compiling(monkeypatch, variant, aggregation, channels_last):
    """While torch.compile traces, no custom autograd function runs (traced through them the compiled scSE
    U-Net's gradients were wrong on CUDA: cosine 0.41 with eager on an H200), and the literal formulas give the
    same output and gradients as the eager path."""
    from scseg.models import se as se_module

    torch.manual_seed(0)
    block = create_se(variant, 6, aggregation=aggregation).double()
    x = _signed_input(dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    eager_x = x.clone().requires_grad_(True)
    eager = block(eager_x)
    eager.square().sum().backward()
    eager_grads = [p.grad.clone() for p in block.parameters()]
    block.zero_grad(set_to_none=True)

    def refuse(*args, **kwargs):
        raise AssertionError("a custom autograd function ran while compiling")

    for function in (se_module._SpatialMean, se_module._Project, *se_module._AGGREGATE.values()):
        monkeypatch.setattr(function, "apply", refuse)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    literal_x = x.clone().requires_grad_(True)
    literal = block(literal_x)
    literal.square().sum().backward()
    torch.testing.assert_close(literal, eager)
    torch.testing.assert_close(literal_x.grad, eager_x.grad)
    for p, g in zip(block.parameters(), eager_grads):
        torch.testing.assert_close(p.grad, g)
