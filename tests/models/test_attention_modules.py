"""Attention modules compared with SE (scseg.models.attention): shapes, gradients, parameter formulas, and equality
with functional re-implementations of each paper's formula that use the module's own weights."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from scseg.models.attention import (
    CBAM,
    ECA,
    AttentionGate,
    CoordinateAttention,
    ProjectExcite,
    adaptive_kernel_size,
    attention_gate,
    cbam,
    coord,
    eca,
    project_excite,
)

DIMS = (2, 3)


# ----------------------------------------------------------------------------------------------------- helpers
def _pool_avg(x: torch.Tensor, size) -> torch.Tensor:
    return (F.adaptive_avg_pool2d if x.ndim == 4 else F.adaptive_avg_pool3d)(x, size)


def _pool_max(x: torch.Tensor, size) -> torch.Tensor:
    return (F.adaptive_max_pool2d if x.ndim == 4 else F.adaptive_max_pool3d)(x, size)


def _conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, padding: int = 0) -> torch.Tensor:
    return (F.conv2d if x.ndim == 4 else F.conv3d)(x, weight, bias, padding=padding)


def _bn(t: torch.Tensor, bn: nn.modules.batchnorm._BatchNorm, training: bool) -> torch.Tensor:
    if training:  # batch statistics; no running statistics to update
        return F.batch_norm(t, None, None, bn.weight, bn.bias, training=True, eps=bn.eps)
    return F.batch_norm(t, bn.running_mean, bn.running_var, bn.weight, bn.bias, training=False, eps=bn.eps)


def _ones(d: int) -> list[int]:
    return [1] * d


def _randn(shape, dtype=torch.float32, seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _randomize_norms(module: nn.Module, seed: int = 1) -> None:
    """Non-trivial BatchNorm affine parameters and running statistics, so eval mode exercises all of them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                shape = m.weight.shape
                m.weight.copy_(1 + 0.3 * torch.randn(shape, generator=g))
                m.bias.copy_(0.3 * torch.randn(shape, generator=g))
                m.running_mean.copy_(0.2 * torch.randn(shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(shape, generator=g))


# ------------------------------------------------------------------------------- reference formulas (functional)
def ref_cbam(m: CBAM, x: torch.Tensor, training: bool):
    n, c, d = x.shape[0], x.shape[1], x.ndim - 2

    def mlp(v):
        return F.linear(F.relu(F.linear(v, m.mlp_in.weight, m.mlp_in.bias)), m.mlp_out.weight, m.mlp_out.bias)

    mc = torch.sigmoid(mlp(_pool_avg(x, 1).flatten(1)) + mlp(_pool_max(x, 1).flatten(1))).view(n, c, *_ones(d))
    f1 = mc * x
    desc = torch.cat([f1.mean(dim=1, keepdim=True), f1.max(dim=1, keepdim=True).values], dim=1)
    k = m.spatial.weight.shape[-1]
    ms = torch.sigmoid(_conv(desc, m.spatial.weight, padding=(k - 1) // 2))
    return ms * f1, {"channel_gate": mc, "spatial_gate": ms}


def ref_eca(m: ECA, x: torch.Tensor, training: bool):
    n, c, d = x.shape[0], x.shape[1], x.ndim - 2
    k = m.conv.weight.shape[-1]
    y = _pool_avg(x, 1).view(n, 1, c)
    a = torch.sigmoid(F.conv1d(y, m.conv.weight, padding=(k - 1) // 2)).view(n, c, *_ones(d))
    return x * a, {"channel_gate": a}


def ref_coord(m: CoordinateAttention, x: torch.Tensor, training: bool):
    n, c = x.shape[:2]
    if x.ndim == 4:
        h, w = x.shape[2:]
        parts = [_pool_avg(x, (h, 1)), _pool_avg(x, (1, w)).permute(0, 1, 3, 2)]  # (n, c, L, 1)
        back = [lambda t: t, lambda t: t.permute(0, 1, 3, 2)]
        names = ["attention_h", "attention_w"]
    else:
        dd, h, w = x.shape[2:]
        parts = [
            _pool_avg(x, (dd, 1, 1)),
            _pool_avg(x, (1, h, 1)).permute(0, 1, 3, 2, 4),
            _pool_avg(x, (1, 1, w)).permute(0, 1, 4, 3, 2),
        ]
        back = [lambda t: t, lambda t: t.permute(0, 1, 3, 2, 4), lambda t: t.permute(0, 1, 4, 3, 2)]
        names = ["attention_d", "attention_h", "attention_w"]
    y = torch.cat(parts, dim=2)
    y = _bn(_conv(y, m.conv_in.weight, m.conv_in.bias), m.norm, training)
    y = y * F.relu6(y + 3) / 6  # h-swish
    gates = {}
    for name, part, conv, undo in zip(names, torch.split(y, [p.shape[2] for p in parts], dim=2), m.conv_out, back):
        gates[name] = undo(torch.sigmoid(_conv(part, conv.weight, conv.bias)))
    out = x
    for name in reversed(names):  # the authors' order, x * a_w * a_h
        out = out * gates[name]
    return out, gates


def ref_project_excite(m: ProjectExcite, x: torch.Tensor, training: bool):
    n, c = x.shape[:2]
    sizes = x.shape[2:]
    z = 0
    for i, size in enumerate(sizes):
        target = [1] * len(sizes)
        target[i] = size
        z = z + _pool_avg(x, tuple(target))
    a = torch.sigmoid(_conv(F.relu(_conv(z, m.squeeze.weight, m.squeeze.bias)), m.excite.weight, m.excite.bias))
    return torch.mul(x, a), {"attention": a}


def ref_attention_gate(m: AttentionGate, x: torch.Tensor, g: torch.Tensor, training: bool):
    if g.shape[2:] != x.shape[2:]:
        g = F.interpolate(g, size=x.shape[2:], mode="bilinear" if x.ndim == 4 else "trilinear", align_corners=False)
    (cx, bx), (cg, bg), (cp, bp) = m.w_x, m.w_g, m.psi
    g1 = _bn(_conv(g, cg.weight, cg.bias), bg, training)
    x1 = _bn(_conv(x, cx.weight, cx.bias), bx, training)
    alpha = torch.sigmoid(_bn(_conv(F.relu(g1 + x1), cp.weight, cp.bias), bp, training))
    return x * alpha, {"attention": alpha}


# --------------------------------------------------------------------------------------------------- the modules
@dataclass
class Spec:
    build: Callable[..., nn.Module]  # (channels, spatial_dims, **options)
    count: Callable[..., int]  # parameter_count
    reference: Callable
    options: dict = field(default_factory=dict)  # small options for the tiny test inputs
    channels: int = 8
    gated: bool = False  # takes a gating signal g


SPECS: dict[str, Spec] = {
    "cbam": Spec(CBAM, cbam.parameter_count, ref_cbam, {"reduction": 2, "spatial_kernel": 3}),
    "eca": Spec(ECA, eca.parameter_count, ref_eca),  # C=8: adaptive k=3
    "coord": Spec(CoordinateAttention, coord.parameter_count, ref_coord, {"reduction": 2, "min_channels": 2}),
    "project_excite": Spec(ProjectExcite, project_excite.parameter_count, ref_project_excite),
    "attention_gate": Spec(
        AttentionGate, attention_gate.parameter_count, ref_attention_gate, {"gating_channels": 6}, gated=True
    ),
}
NAMES = list(SPECS)
HAS_NORM = {"coord", "attention_gate"}


def _build(name: str, dims: int, dtype=torch.float32, channels: int | None = None, **override) -> nn.Module:
    spec = SPECS[name]
    torch.manual_seed(0)
    module = spec.build(channels or spec.channels, spatial_dims=dims, **{**spec.options, **override})
    _randomize_norms(module)
    return module.to(dtype)


def _inputs(
    name: str, dims: int, dtype=torch.float32, small: bool = False, channels: int | None = None
) -> tuple[torch.Tensor, ...]:
    spec = SPECS[name]
    if dims == 2:
        spatial = (3, 4) if small else (5, 6)
    else:
        spatial = (2, 3, 3) if small else (3, 4, 5)
    x = _randn((2, channels or spec.channels, *spatial), dtype)
    if not spec.gated:
        return (x,)
    coarse = tuple(max(1, (s + 1) // 2) for s in spatial)  # the gating signal one level down
    return x, _randn((2, spec.options["gating_channels"], *coarse), dtype, seed=1)


# --------------------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("dims", DIMS)
@pytest.mark.parametrize("name", NAMES)
def test_output_has_input_shape(name, dims):
    module = _build(name, dims)
    inputs = _inputs(name, dims)
    assert module(*inputs).shape == inputs[0].shape


@pytest.mark.parametrize("name", NAMES)
def test_channels_last_input_gives_the_same_result(name):
    module = _build(name, 2).eval()
    inputs = _inputs(name, 2)
    x_cl = inputs[0].contiguous(memory_format=torch.channels_last)
    out = module(x_cl, *inputs[1:])
    assert out.shape == inputs[0].shape
    torch.testing.assert_close(out, module(*inputs), atol=1e-6, rtol=1e-5)


# BatchNorm modules in both modes (batch statistics, running statistics); the others have one function
GRADCHECK_CASES = [(n, d, m) for n in NAMES for d in DIMS for m in (("train", "eval") if n in HAS_NORM else ("train",))]


@pytest.mark.parametrize(("name", "dims", "mode"), GRADCHECK_CASES)
def test_gradcheck_inputs_and_parameters(name, dims, mode):
    module = _build(name, dims, torch.float64).train(mode == "train")
    inputs = _inputs(name, dims, torch.float64, small=True)
    # fast mode: checks random projections u^T J v of the full Jacobian (one backward, one directional difference)
    _gradcheck(module, inputs, fast_mode=True)


# four channels; ECA with a fixed k=3 (the adaptive k is 1 for four channels, which would skip the interaction)
TINY_OPTIONS = {"eca": {"kernel_size": 3}}


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_full_jacobian_on_a_tiny_input(name):
    module = _build(name, 2, torch.float64, channels=4, **TINY_OPTIONS.get(name, {})).train()
    inputs = tuple(t[..., :2, :3] for t in _inputs(name, 2, torch.float64, small=True, channels=4))
    _gradcheck(module, inputs, fast_mode=False)


def _gradcheck(module: nn.Module, inputs: tuple[torch.Tensor, ...], fast_mode: bool) -> None:
    """Gradients with respect to the inputs and to every parameter (through ``torch.func.functional_call``)."""
    inputs = tuple(t.detach().clone().requires_grad_() for t in inputs)
    names, params = zip(*[(k, p.detach().clone().requires_grad_()) for k, p in module.named_parameters()])

    def fn(*args):
        tensors, weights = args[: len(inputs)], args[len(inputs) :]
        return torch.func.functional_call(module, dict(zip(names, weights)), tensors)

    assert torch.autograd.gradcheck(fn, (*inputs, *params), eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=fast_mode)


PARAMETER_CASES = {
    "cbam": [
        (16, {}),
        (32, {}),
        (64, {"reduction": 8, "spatial_kernel": 3}),
        (5, {"reduction": 2}),
        (1, {"reduction": 1}),
    ],
    "eca": [(1, {}), (8, {}), (64, {}), (256, {}), (48, {"kernel_size": 7}), (64, {"gamma": 1, "b": 2})],
    "coord": [
        (8, {}),
        (64, {}),
        (512, {}),
        (24, {"reduction": 4, "min_channels": 2}),
        (3, {"min_channels": 1, "reduction": 1}),
    ],
    "project_excite": [(1, {"reduction": 1}), (8, {}), (64, {"reduction": 8}), (7, {"reduction": 3})],
    "attention_gate": [
        (8, {"gating_channels": 16}),
        (1, {"gating_channels": 1, "inter_channels": 1}),
        (32, {"gating_channels": 64, "inter_channels": 12}),
        (5, {"gating_channels": 3}),
    ],
}


@pytest.mark.parametrize("dims", DIMS)
@pytest.mark.parametrize(
    ("name", "channels", "options"), [(n, c, o) for n, cases in PARAMETER_CASES.items() for c, o in cases]
)
def test_parameter_count_formula_matches_built_module(name, channels, options, dims):
    spec = SPECS[name]
    module = spec.build(channels, spatial_dims=dims, **options)
    assert spec.count(channels, spatial_dims=dims, **options) == sum(p.numel() for p in module.parameters())


def test_parameter_count_known_values():
    # Written out by hand from each paper's formula.
    assert cbam.parameter_count(64) == 2 * 64 * 4 + 4 + 64 + 2 * 49  # h = 64 // 16 = 4
    assert cbam.parameter_count(64, 3) == 2 * 64 * 4 + 4 + 64 + 2 * 343
    assert eca.parameter_count(256) == 5
    assert coord.parameter_count(64) == 3 * 64 * 8 + 3 * 8 + 2 * 64  # mip = max(8, 64 // 32) = 8
    assert coord.parameter_count(64, 3) == 4 * 64 * 8 + 3 * 8 + 3 * 64
    assert project_excite.parameter_count(64) == 2 * 64 * 32 + 32 + 64
    assert attention_gate.parameter_count(64, 128) == 32 * (64 + 128 + 7) + 3


@pytest.mark.parametrize(("dtype", "atol"), [(torch.float32, 1e-6), (torch.float64, 1e-10)], ids=["float32", "float64"])
@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("dims", DIMS)
@pytest.mark.parametrize("name", NAMES)
def test_matches_functional_reference(name, dims, mode, dtype, atol):
    training = mode == "train"
    module = _build(name, dims, dtype).train(training)
    inputs = _inputs(name, dims, dtype)
    with torch.no_grad():
        expected, expected_maps = SPECS[name].reference(module, *inputs, training=training)
        out = module(*inputs)
        maps = module.maps(*inputs)
    torch.testing.assert_close(out, expected, atol=atol, rtol=0)
    assert maps.keys() == expected_maps.keys()
    for key in maps:
        assert maps[key].shape == expected_maps[key].shape, key
        torch.testing.assert_close(maps[key], expected_maps[key], atol=atol, rtol=0)


EXPECTED_MAPS = {
    # name -> {key: shape as a function of (n, c, spatial)}
    "cbam": {"channel_gate": lambda n, c, s: (n, c, *_ones(len(s))), "spatial_gate": lambda n, c, s: (n, 1, *s)},
    "eca": {"channel_gate": lambda n, c, s: (n, c, *_ones(len(s)))},
    "project_excite": {"attention": lambda n, c, s: (n, c, *s)},
    "attention_gate": {"attention": lambda n, c, s: (n, 1, *s)},
}


def _coord_shapes(n, c, s):
    axes = ("h", "w") if len(s) == 2 else ("d", "h", "w")
    return {f"attention_{a}": (n, c, *[L if j == i else 1 for j, L in enumerate(s)]) for i, a in enumerate(axes)}


@pytest.mark.parametrize("dims", DIMS)
@pytest.mark.parametrize("name", NAMES)
def test_maps_shapes_ranges_and_consistency_with_forward(name, dims):
    module = _build(name, dims).eval()
    inputs = _inputs(name, dims)
    x = inputs[0]
    n, c, spatial = x.shape[0], x.shape[1], tuple(x.shape[2:])
    with torch.no_grad():
        maps = module.maps(*inputs)
        out = module(*inputs)
    if name == "coord":
        expected = _coord_shapes(n, c, spatial)
    else:
        expected = {k: f(n, c, spatial) for k, f in EXPECTED_MAPS[name].items()}
    assert {k: tuple(v.shape) for k, v in maps.items()} == expected
    for key, value in maps.items():
        assert torch.all((value > 0) & (value < 1)), key  # sigmoid gates
    if name == "cbam":
        # the spatial gate acts on the channel-refined map: out = (x * M_c) * M_s
        torch.testing.assert_close(out, x * maps["channel_gate"] * maps["spatial_gate"])
    else:
        product = x
        for value in maps.values():
            product = product * value
        torch.testing.assert_close(out, product)


@pytest.mark.parametrize("name", ["cbam", "eca", "project_excite"])
def test_gates_without_batchnorm_see_one_sample_only(name):
    module = _build(name, 2)
    (x,) = _inputs(name, 2)
    torch.testing.assert_close(module(x)[:1], module(x[:1]))


@pytest.mark.parametrize("name", NAMES)
def test_forward_draws_no_random_numbers(name):
    module = _build(name, 2)
    inputs = _inputs(name, 2)
    state = torch.get_rng_state()
    module(*inputs)
    module.maps(*inputs)
    assert torch.equal(torch.get_rng_state(), state)


def test_eca_adaptive_kernel_size_table():
    # (log2 C + 1) / 2: C=64 -> 3.5 -> 3; C=128 -> 4 (tie between 3 and 5) -> 5; C=256 -> 4.5 -> 5; C=2048 -> 6 -> 7
    table = {1: 1, 2: 1, 4: 1, 8: 3, 16: 3, 32: 3, 64: 3, 128: 5, 256: 5, 512: 5, 1024: 5, 2048: 7}
    assert {c: adaptive_kernel_size(c) for c in table} == table
    assert ECA(64).kernel_size == 3 and ECA(64, kernel_size=9).kernel_size == 9


@pytest.mark.parametrize(("gamma", "b"), [(2, 1), (1, 0), (3, 2), (1.5, 0.5)])
def test_eca_kernel_is_the_nearest_odd_number(gamma, b):
    for channels in range(1, 4097):
        t = abs(math.log2(channels) / gamma + b / gamma)
        k = adaptive_kernel_size(channels, gamma, b)
        assert k % 2 == 1
        nearest = min(abs(t - o) for o in range(1, int(t) + 3, 2))
        assert abs(t - k) == pytest.approx(nearest, abs=1e-9), channels
        if abs(t - round(t)) < 1e-12 and round(t) % 2 == 0:  # a tie: the larger odd number, as the authors' code
            assert k == round(t) + 1


@pytest.mark.parametrize("dims", DIMS)
def test_attention_gate_resamples_a_coarse_gating_signal(dims):
    module = _build("attention_gate", dims).eval()
    x, g = _inputs("attention_gate", dims)
    mode = "bilinear" if dims == 2 else "trilinear"
    g_fine = F.interpolate(g, size=x.shape[2:], mode=mode, align_corners=False)
    torch.testing.assert_close(module(x, g), module(x, g_fine))
    assert module.resample(g_fine, x.shape[2:]) is g_fine  # same size: no resampling


def test_attention_gate_default_inter_channels_is_half():
    assert AttentionGate(10, 4).inter_channels == 5
    assert AttentionGate(10, 4, inter_channels=3).inter_channels == 3


BAD_OPTIONS = [
    ("cbam", 8, {}, "reduction"),  # default reduction 16 leaves no hidden channel for 8 channels
    ("cbam", 8, {"reduction": 0}, "reduction"),
    ("cbam", 8, {"reduction": 9}, "reduction"),
    ("cbam", 8, {"reduction": 2.0}, "reduction"),
    ("cbam", 8, {"reduction": 2, "spatial_kernel": 4}, "spatial_kernel"),
    ("cbam", 8, {"reduction": 2, "spatial_kernel": 0}, "spatial_kernel"),
    ("eca", 0, {}, "channels"),
    ("eca", 8, {"gamma": 0}, "gamma"),
    ("eca", 8, {"gamma": float("nan")}, "gamma"),
    ("eca", 8, {"b": float("inf")}, "b"),
    ("eca", 8, {"kernel_size": 2}, "kernel_size"),
    ("eca", 8, {"kernel_size": 0}, "kernel_size"),
    ("coord", 8, {"reduction": 0}, "reduction"),
    ("coord", 8, {"min_channels": 0}, "min_channels"),
    ("coord", 0, {}, "channels"),
    ("project_excite", 8, {"reduction": 16}, "reduction"),
    ("project_excite", 8, {"reduction": -1}, "reduction"),
    ("attention_gate", 1, {"gating_channels": 4}, "inter_channels"),
    ("attention_gate", 8, {"gating_channels": 0}, "gating_channels"),
    ("attention_gate", 8, {"gating_channels": 4, "inter_channels": 0}, "inter_channels"),
]


@pytest.mark.parametrize(("name", "channels", "options", "option"), BAD_OPTIONS)
def test_bad_options_raise_value_error_naming_the_option(name, channels, options, option):
    spec = SPECS[name]
    pattern = rf"\b{option} must be\b"
    with pytest.raises(ValueError, match=pattern):
        spec.build(channels, spatial_dims=2, **options)
    with pytest.raises(ValueError, match=pattern):
        spec.count(channels, spatial_dims=2, **options)


@pytest.mark.parametrize("spatial_dims", [1, 4, 0])
@pytest.mark.parametrize("name", NAMES)
def test_spatial_dims_other_than_2_or_3_raise(name, spatial_dims):
    spec = SPECS[name]
    pattern = rf"spatial_dims must be 2 or 3, got {spatial_dims}"
    with pytest.raises(ValueError, match=pattern):
        spec.build(spec.channels, spatial_dims=spatial_dims, **spec.options)
    with pytest.raises(ValueError, match=pattern):
        spec.count(spec.channels, spatial_dims=spatial_dims, **spec.options)


@pytest.mark.parametrize("name", NAMES)
def test_wrong_input_shape_raises(name):
    module = _build(name, 2)
    inputs = _inputs(name, 3)  # a 3D input to a 2D module
    with pytest.raises(ValueError, match="expects x of shape"):
        module(*inputs)


# ------------------------------------------------------------------------------------------- multiply-adds
# Gating products per module (one multiply per element of x each): the part of a formula no layer hook sees.
GATING_PRODUCTS = {"cbam": 2, "eca": 1, "coord": None, "project_excite": 1, "attention_gate": 1}  # coord: one per axis
MAC_CASES = [
    ("cbam", 16, {}),
    ("cbam", 32, {"reduction": 4, "spatial_kernel": 3}),
    ("eca", 16, {}),
    ("eca", 64, {"kernel_size": 7}),
    ("coord", 16, {}),
    ("coord", 24, {"reduction": 4, "min_channels": 2}),
    ("project_excite", 8, {}),
    ("project_excite", 12, {"reduction": 3}),
    ("attention_gate", 8, {}),
    ("attention_gate", 6, {"inter_channels": 5}),
]


@pytest.mark.parametrize("dims", DIMS)
@pytest.mark.parametrize(("name", "channels", "options"), MAC_CASES)
def test_multiply_add_formula_matches_a_hook_count_of_the_built_module(name, channels, options, dims):
    from scseg.models.se import create_se
    from scseg.models.summary import count_multiply_adds
    from scseg.se_options import module_spec

    spec = module_spec(name)
    gating = {"gating_channels": 2 * channels + 1} if spec.placement == "skip" else {}
    module = create_se(name, channels, spatial_dims=dims, options=options, **gating)
    spatial = (5, 6, 7)[:dims]
    shape = (2, channels, *spatial)
    # every convolution (ECA's 1D one too) and linear layer by its hook, then the gating products
    hooks = count_multiply_adds(module, shape, formulas=False) // 2
    products = GATING_PRODUCTS[name] or dims
    formula = spec.count_multiply_adds(channels, spatial, **gating, **options)
    assert formula == hooks + products * channels * math.prod(spatial)
    assert count_multiply_adds(module, shape) == 2 * formula  # the summary's own path takes the formula


def test_multiply_add_known_values():
    # Written out by hand (per sample, 2D 8x8, P = 64).
    assert cbam.multiply_adds(64, (8, 8)) == 4 * 64 * 4 + 2 * 49 * 64 + 2 * 64 * 64
    assert eca.multiply_adds(256, (8, 8)) == 256 * 5 + 256 * 64
    assert coord.multiply_adds(64, (8, 8)) == 2 * 64 * 8 * 16 + 2 * 64 * 64
    assert project_excite.multiply_adds(64, (8, 8)) == 2 * 64 * 32 * 64 + 64 * 64
    assert attention_gate.multiply_adds(64, (8, 8), gating_channels=128) == 32 * (64 + 128 + 1) * 64 + 64 * 64
