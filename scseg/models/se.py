"""Squeeze-and-excitation recalibration blocks: cSE, sSE and scSE (Roy et al., MICCAI 2018).

Every block maps a feature map ``x`` of shape ``(N, C, *spatial)`` to a recalibrated map of the same shape.
One implementation serves 2D (``spatial_dims=2``) and 3D (``spatial_dims=3``) inputs. The gates are exposed
(``gate(x)``) so tests and analyses can inspect them directly.

Aggregations of scSE (the two recalibrated maps ``x*c`` and ``x*s``):

- ``add``  (MICCAI paper, default): ``x*c + x*s``.
- ``max``  (authors' code, best in the TMI paper): element-wise ``max(x*c, x*s)``. Because both gates are
  positive this equals ``x * g`` with ``g = max(c, s)`` where ``x >= 0`` and ``min(c, s)`` where ``x < 0``;
  on signed inputs it is *not* ``x * max(c, s)``.
- ``mul``: ``(x*c) * (x*s)``.
- ``concat``: a 1x1 convolution from ``[x*c, x*s]`` (2C channels) back to C.

Why the custom autograd functions: the gates are tiny and their arithmetic is negligible, so on a CPU an SE block
costs what its passes over the full-size ``x`` cost (memory-bound), plus what autograd keeps for backward.
Written literally, scSE ``add`` makes three full-size tensors in forward and computes ``grad * x`` twice in
backward; the spatial squeeze as a 1x1 convolution to one channel has a slow backward, and the channel mean's
backward materialises ``grad / (H*W)`` at full size. Here ``add``, ``max`` and ``mul`` run as one autograd node
each that keeps only ``x`` and the two small gates and recomputes the rest in backward; the mean hands back a
broadcast view; the 1x1 projection is one matrix product each way (still an ``nn.Conv2d``/``nn.Conv3d``
module, so parameters, hooks and multiply-add counts are unchanged). Results equal the literal formulas up to
float rounding (``tests/models/test_se.py``); ``scripts/bench_se_memory.py`` measures the bytes kept for
backward and ``scripts/benchmark.py --sections se_blocks`` the time. Reductions of channels-last inputs run on an
``(N, P, C)`` view, where they are contiguous.

Under ``torch.compile`` (``trainer.compile``) every block runs the literal formulas instead (:func:`compiling`):
the compiler fuses them and derives their backward itself, which is what the custom functions do by hand for
eager mode. Traced through the custom functions, the compiled scSE U-Net's gradients were wrong on CUDA (torch
2.11, H200: cosine 0.41 with eager, gradient norm 0.155 against 0.376, in fp32 and bf16, either memory layout;
``se=none`` matched) and no compiled SE network learned the phantom (``make gpu-check``, docs/benchmarks_gpu.md).

Blocks built with ``kernels="fused"`` (``trainer.se_kernels``: ``auto`` in the CPU presets) run cSE, sSE and scSE
``add`` through :mod:`scseg.models.se_fused` instead: C++ kernels that make one pass over ``x`` per step rather
than one per ATen operation. Same parameters, same function; ``gate(x)`` is the same in both.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import nn
from torch.autograd.function import FunctionCtx, once_differentiable

from scseg.models.se_fused import FusedRecalibration, channels_last_rows, layout_of, resolve_mode
from scseg.se_options import (
    AGGREGATIONS,
    SE_VARIANTS,  # noqa: F401  (re-exported: the vocabulary's one home is se_options)
    ModuleSpec,
    module_names,
    module_spec,
)
from scseg.se_options.registry import load


def _conv_cls(spatial_dims: int) -> type[nn.Module]:
    if spatial_dims == 2:
        return nn.Conv2d
    if spatial_dims == 3:
        return nn.Conv3d
    raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")


def compiling() -> bool:
    """Whether ``torch.compile`` is tracing: then the blocks take the literal formulas (see the module docstring)."""
    return torch.compiler.is_compiling()


def aggregate_literal(aggregation: str, x: torch.Tensor, c: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """scSE's ``add`` / ``max`` / ``mul`` of ``x*c`` and ``x*s`` in plain operations (autograd's own backward:
    ``torch.maximum`` splits a tie evenly, as :class:`_ScSEMax` does)."""
    xc, xs = x * c, x * s
    if aggregation == "add":
        return xc + xs
    if aggregation == "max":
        return torch.maximum(xc, xs)
    if aggregation == "mul":
        return xc * xs
    raise ValueError(f"no literal form of the scSE aggregation {aggregation!r}")


# ---------------------------------------------------------------------------------------------- autograd functions
class _SpatialMean(torch.autograd.Function):
    """Mean over the spatial dimensions, ``(N, C, *spatial) -> (N, C)``. Backward returns a broadcast view of
    ``grad / numel`` instead of writing it out at full size (autograd's own mean backward does)."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor) -> torch.Tensor:
        ctx.shape = x.shape
        rows = channels_last_rows(x)
        if rows is not None:
            return rows.mean(dim=1)
        return x.mean(dim=tuple(range(2, x.ndim)))

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        shape = ctx.shape
        numel = shape[2:].numel()
        return (grad / numel).reshape(*grad.shape, *([1] * (len(shape) - 2))).expand(shape)


class _Project(torch.autograd.Function):
    """``sum_c w_c x_c + b``: a 1x1 convolution to one channel as one matrix product per sample.

    ``x.flatten(2)`` is a view for contiguous and channels-last inputs alike, so neither direction copies ``x``;
    backward writes the input gradient once (``w`` outer ``grad``) and reads ``x`` once for the weight gradient.
    """

    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        n, channels = x.shape[:2]
        # bmm, not matmul: matmul folds a (1, C) @ (N, C, P) product into one matrix product and copies x to do so
        q = torch.bmm(weight.reshape(1, 1, channels).to(x.dtype).expand(n, 1, channels), x.flatten(2))  # (N, 1, P)
        if bias is not None:
            q = q + bias.to(q.dtype).reshape(1, 1, 1)
        return q.reshape(x.shape[0], 1, *x.shape[2:])

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        channels = x.shape[1]
        grad_x = grad_w = grad_b = None
        g = grad.to(x.dtype)
        if ctx.needs_input_grad[0]:
            w = weight.reshape(1, channels, *([1] * (x.ndim - 2))).to(x.dtype)
            grad_x = torch.mul(w, g, out=torch.empty_like(x))  # (1, C) x (N, 1, P): x's shape and layout
        if ctx.needs_input_grad[1]:
            # (1, P) @ (P, C) per sample: ten times faster than (C, P) @ (P, 1), which takes a slow bmm path on CPU
            grad_w = torch.bmm(g.reshape(x.shape[0], 1, -1), x.flatten(2).transpose(1, 2)).sum(0)  # (1, C)
            grad_w = grad_w.reshape(weight.shape).to(weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum().reshape(1).to(weight.dtype)
        return grad_x, grad_w, grad_b


def _sum_over_space(t: torch.Tensor) -> torch.Tensor:
    """``(N, C, *spatial) -> (N, C, 1, ..., 1)``."""
    rows = channels_last_rows(t)
    if rows is not None:
        return rows.sum(dim=1).reshape(*t.shape[:2], *([1] * (t.ndim - 2)))
    return t.sum(dim=tuple(range(2, t.ndim)), keepdim=True)


def _sum_over_channels(t: torch.Tensor) -> torch.Tensor:
    """``(N, C, *spatial) -> (N, 1, *spatial)``. On channels-last input each pixel's channels are one short
    contiguous row; ATen's reduction pays per row there, a matrix-vector product with ones does not."""
    rows = channels_last_rows(t)
    if rows is not None:
        ones = torch.ones(t.shape[1], dtype=t.dtype, device=t.device)
        return torch.mv(rows.reshape(-1, t.shape[1]), ones).reshape(t.shape[0], 1, *t.shape[2:])
    return t.sum(dim=1, keepdim=True)


class _ScSEAdd(torch.autograd.Function):
    """``x*c + x*s`` in two passes over ``x``; keeps ``x``, ``c``, ``s`` (nothing full-size besides ``x``)."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor, c: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, c, s)
        return torch.mul(x, c).addcmul_(x, s)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: torch.Tensor):
        x, c, s = ctx.saved_tensors
        grad_x = torch.mul(grad, c).addcmul_(grad, s) if ctx.needs_input_grad[0] else None
        grad_c = grad_s = None
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            gx = grad * x
            grad_c = _sum_over_space(gx)
            grad_s = _sum_over_channels(gx)
        return grad_x, grad_c, grad_s


class _ScSEMax(torch.autograd.Function):
    """``max(x*c, x*s)``; keeps ``x``, ``c``, ``s`` only. Gradients are those of the equal form
    ``x * where(x >= 0, max(c, s), min(c, s))``: at ``x = 0`` the larger gate, ties of ``c`` and ``s`` split evenly."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor, c: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, c, s)
        out = torch.mul(x, c)
        return torch.maximum(out, x * s, out=out)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: torch.Tensor):
        x, c, s = ctx.saved_tensors
        # the share of the gradient that flows through x*c: 1 where c is the gate applied (the larger one where
        # x >= 0, the smaller one where x < 0), 0 where s is, 1/2 where c == s (torch.maximum / minimum's rule)
        to_c = torch.where(x >= 0, c > s, c < s).to(grad.dtype).masked_fill_(c == s, 0.5)  # no host sync
        grad_xc = grad * to_c
        grad_xs = torch.sub(grad, grad_xc, out=to_c)
        grad_x = torch.mul(grad_xc, c).addcmul_(grad_xs, s) if ctx.needs_input_grad[0] else None
        grad_c = _sum_over_space(grad_xc.mul_(x)) if ctx.needs_input_grad[1] else None
        grad_s = _sum_over_channels(grad_xs.mul_(x)) if ctx.needs_input_grad[2] else None
        return grad_x, grad_c, grad_s


class _ScSEMul(torch.autograd.Function):
    """``(x*c) * (x*s)``; keeps ``x``, ``c``, ``s`` instead of both full-size products."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor, c: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, c, s)
        return torch.mul(x, c).mul_(x * s)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: torch.Tensor):
        x, c, s = ctx.saved_tensors
        gx = grad * x  # d out / d c = x*x*s and d out / d s = x*x*c, both through grad * x * x
        grad_x = grad_c = grad_s = None
        if ctx.needs_input_grad[0]:
            grad_x = gx * (c * s) * 2
        gxx = gx.mul_(x)
        if ctx.needs_input_grad[1]:
            grad_c = _sum_over_space(gxx * s)
        if ctx.needs_input_grad[2]:
            grad_s = _sum_over_channels(gxx.mul_(c))
        return grad_x, grad_c, grad_s


_AGGREGATE = {"add": _ScSEAdd, "max": _ScSEMax, "mul": _ScSEMul}


class _Projection2d(nn.Conv2d):
    """sSE's 1x1 convolution to one channel (same parameters, initialisation and hooks as ``nn.Conv2d``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if compiling():
            return super().forward(x)
        return _Project.apply(x, self.weight, self.bias)


class _Projection3d(nn.Conv3d):
    """sSE's 1x1x1 convolution to one channel (same parameters, initialisation and hooks as ``nn.Conv3d``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if compiling():
            return super().forward(x)
        return _Project.apply(x, self.weight, self.bias)


# ---------------------------------------------------------------------------------------------- blocks
def _scaled(gate: torch.Tensor, gate_scale: float) -> torch.Tensor:
    """``gate_scale * gate``; at 1 the gate itself (no extra operation, so results stay bit-identical)."""
    return gate if gate_scale == 1.0 else gate * gate_scale


class ChannelSE(nn.Module):
    """cSE: spatial squeeze, channel excitation. One gate value per channel, constant over space.

    ``gate_scale`` multiplies the sigmoid gate (range (0, gate_scale)): at 2 the block starts near identity
    (gate ~ 0.5 * 2), the range scSE ``add`` has (c + s ~ 1), so the two can be compared without that confound.
    """

    def __init__(
        self,
        channels: int,
        reduction: int = 2,
        spatial_dims: int = 2,
        kernels: str = "eager",
        gate_scale: float = 1.0,
    ) -> None:
        super().__init__()
        _conv_cls(spatial_dims)  # validates spatial_dims
        hidden = _hidden_channels(channels, reduction)
        self.spatial_dims = spatial_dims
        self.kernels = _check_kernels(kernels)
        self.gate_scale = _check_gate_scale(gate_scale)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """Channel gate of shape ``(N, C, 1, ..., 1)`` in (0, gate_scale)."""
        squeezed = x.mean(dim=tuple(range(2, x.ndim))) if compiling() else _SpatialMean.apply(x)
        excited = _scaled(torch.sigmoid(self.fc2(torch.relu(self.fc1(squeezed)))), self.gate_scale)
        return excited.reshape(*excited.shape, *([1] * self.spatial_dims))

    def maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"channel_gate": (N, C, 1, ..., 1)}``: the gate this block multiplies ``x`` with."""
        return {"channel_gate": self.gate(x)}

    def kernel_path(self) -> str:
        """``fused`` when the C++ kernels compute this block (CPU float inputs), else ``aten``."""
        return "fused" if self.kernels == "fused" and self.gate_scale == 1.0 else "aten"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernels == "fused" and self.gate_scale == 1.0 and layout_of(x) is not None:
            fc1, fc2 = self.fc1, self.fc2
            return FusedRecalibration.apply(x, fc1.weight, fc1.bias, fc2.weight, fc2.bias, None, None)
        return x * self.gate(x)


class SpatialSE(nn.Module):
    """sSE: channel squeeze, spatial excitation. One gate value per voxel, constant over channels.
    ``gate_scale`` multiplies the sigmoid gate, as in :class:`ChannelSE`."""

    def __init__(self, channels: int, spatial_dims: int = 2, kernels: str = "eager", gate_scale: float = 1.0) -> None:
        super().__init__()
        _conv_cls(spatial_dims)  # validates spatial_dims
        self.kernels = _check_kernels(kernels)
        self.gate_scale = _check_gate_scale(gate_scale)
        self.conv = (_Projection2d if spatial_dims == 2 else _Projection3d)(channels, 1, kernel_size=1)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """Spatial gate of shape ``(N, 1, *spatial)`` in (0, gate_scale)."""
        return _scaled(torch.sigmoid(self.conv(x)), self.gate_scale)

    def maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"spatial_gate": (N, 1, *spatial)}``: the gate this block multiplies ``x`` with."""
        return {"spatial_gate": self.gate(x)}

    def kernel_path(self) -> str:
        """``fused`` when the C++ kernels compute this block (CPU float inputs), else ``aten``."""
        return "fused" if self.kernels == "fused" and self.gate_scale == 1.0 else "aten"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernels == "fused" and self.gate_scale == 1.0 and layout_of(x) is not None:
            return FusedRecalibration.apply(x, None, None, None, None, self.conv.weight, self.conv.bias)
        return x * self.gate(x)


class ConcurrentSE(nn.Module):
    """scSE: cSE and sSE computed from the same input, recombined by ``aggregation``; ``gate_scale`` multiplies
    both gates."""

    def __init__(
        self,
        channels: int,
        reduction: int = 2,
        spatial_dims: int = 2,
        aggregation: str = "add",
        kernels: str = "eager",
        gate_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"unknown scSE aggregation {aggregation!r}; valid choices: {', '.join(AGGREGATIONS)}")
        self.aggregation = aggregation
        self.kernels = _check_kernels(kernels)
        self.gate_scale = _check_gate_scale(gate_scale)
        self.cse = ChannelSE(channels, reduction, spatial_dims, gate_scale=gate_scale)
        self.sse = SpatialSE(channels, spatial_dims, gate_scale=gate_scale)
        if aggregation == "concat":
            self.fuse = _conv_cls(spatial_dims)(2 * channels, channels, kernel_size=1)

    def maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Both gates, computed from the same input: ``channel_gate`` (N, C, 1, ..., 1), ``spatial_gate``
        (N, 1, *spatial)."""
        return {"channel_gate": self.cse.gate(x), "spatial_gate": self.sse.gate(x)}

    def kernel_path(self) -> str:
        """``fused`` when the C++ kernels compute this block (``add``, CPU float inputs), else ``aten``."""
        fused = self.kernels == "fused" and self.aggregation == "add" and self.gate_scale == 1.0
        return "fused" if fused else "aten"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            self.kernels == "fused"
            and self.aggregation == "add"
            and self.gate_scale == 1.0
            and layout_of(x) is not None
        ):
            cse, sse = self.cse, self.sse
            return FusedRecalibration.apply(
                x, cse.fc1.weight, cse.fc1.bias, cse.fc2.weight, cse.fc2.bias, sse.conv.weight, sse.conv.bias
            )
        c = self.cse.gate(x)
        s = self.sse.gate(x)
        function = _AGGREGATE.get(self.aggregation)
        if function is not None:
            return aggregate_literal(self.aggregation, x, c, s) if compiling() else function.apply(x, c, s)
        return self.fuse(torch.cat([x * c, x * s], dim=1))


def se_kernel_path(model: nn.Module) -> str:
    """Which code computes ``model``'s SE gates on a CPU float tensor: ``fused`` (every block through the C++
    kernels), ``aten``, ``mixed`` (some of each) or ``none`` (no SE block). Recorded in summary.json: the setting
    says what was asked for, this what ran.

    A block is a module :func:`create_se` built (or one with a ``kernel_path()`` method); modules inside a block
    (scSE's cSE and sSE halves) compute inside it. A block without ``kernel_path()`` runs ATen operations.
    """
    paths = set()
    for block in outermost_blocks(model, lambda m: is_recalibration(m) or hasattr(m, "kernel_path")):
        paths.add(block.kernel_path() if hasattr(block, "kernel_path") else "aten")
    if not paths:
        return "none"
    return paths.pop() if len(paths) == 1 else "mixed"


def is_recalibration(module: nn.Module) -> bool:
    """Whether :func:`create_se` built ``module`` (it records the module's registry name on it)."""
    return isinstance(getattr(module, "se_name", None), str)


def outermost_blocks(model: nn.Module, is_block: Callable[[nn.Module], bool]) -> list[nn.Module]:
    """The modules of ``model`` (in ``named_modules`` order) for which ``is_block`` holds and that sit inside no
    other such module."""
    found: list[nn.Module] = []
    inside: set[int] = set()
    for module in model.modules():
        if id(module) in inside or not is_block(module):
            continue
        found.append(module)
        inside.update(id(m) for m in module.modules() if m is not module)
    return found


def _check_gate_scale(gate_scale: float) -> float:
    scale = float(gate_scale)
    if not scale > 0 or scale != scale or scale == float("inf"):
        raise ValueError(f"se.gate_scale must be a positive finite number, got {gate_scale!r}")
    return scale


def _check_kernels(kernels: str) -> str:
    if kernels not in ("fused", "eager"):
        raise ValueError(f"SE block kernels must be 'fused' or 'eager' (create_se resolves 'auto'), got {kernels!r}")
    return kernels


def _hidden_channels(channels: int, reduction: int) -> int:
    if reduction < 1 or channels // reduction < 1:
        raise ValueError(
            f"cSE needs channels // reduction >= 1, got channels={channels}, reduction={reduction}; "
            f"choose a reduction between 1 and {channels}"
        )
    return channels // reduction


def check_se_options(name: str, aggregation: str = "add", spatial_dims: int = 2) -> None:
    """Raise ``ValueError`` naming the setting when the SE module, aggregation or dimensionality is unknown.

    Builds nothing (so it draws no random numbers): ``create_model`` calls it up front, so the error names the
    setting rather than a block, also for ``none`` which never builds one. The aggregation is checked for every
    module (configs carry it for all), so a typo in a sweep fails early.
    """
    module_spec(name)
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown scSE aggregation {aggregation!r}; valid choices: {', '.join(AGGREGATIONS)}")
    _conv_cls(spatial_dims)


def resolve_module_options(
    spec: ModuleSpec,
    reduction: int | None = None,
    aggregation: str | None = None,
    gate_scale: float | None = None,
    options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The options ``spec``'s module is built with: the shared settings (``se.reduction``, ``se.aggregation``,
    ``se.gate_scale``) and the module's own ``options``, only those it declares, its defaults for the rest."""
    given = {k: v for k, v in dict(options or {}).items() if v is not None}
    for key, value in (("reduction", reduction), ("aggregation", aggregation), ("gate_scale", gate_scale)):
        if value is not None:
            given.setdefault(key, value)
    return spec.resolve_options(given)


# Per network under construction (see se_build_scope): how many SE blocks were built from each global RNG state.
_SE_SCOPE: contextvars.ContextVar[dict[bytes, int] | None] = contextvars.ContextVar("scseg_se_scope", default=None)


@contextlib.contextmanager
def se_build_scope() -> Iterator[None]:
    """Build one network inside this: SE blocks created one after another with no random draw in between (the
    same global RNG state) are numbered, so they get different weights. ``create_model`` enters it."""
    token = _SE_SCOPE.set({})
    try:
        yield
    finally:
        _SE_SCOPE.reset(token)


def _next_se_seed() -> int:
    """A seed for the next SE block, derived from the global CPU RNG state WITHOUT drawing from it.

    The state at each block is the same whether the network gets SE blocks or not (they draw nothing from it), so
    the seed depends only on the global seed and where in the backbone the block sits. Inside
    :func:`se_build_scope`, blocks that see the same state are told apart by a count; outside it the same state
    always gives the same seed.
    """
    state = hashlib.blake2b(torch.random.default_generator.get_state().numpy().tobytes(), digest_size=16).digest()
    counts = _SE_SCOPE.get()
    repeat = 0
    if counts is not None:
        repeat = counts.get(state, 0)
        counts[state] = repeat + 1
    digest = hashlib.blake2b(state + repeat.to_bytes(8, "little"), digest_size=8, person=b"scseg-se").digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class PassSkip(nn.Module):
    """A skip connection passed on as it is: ``forward(x, g) = x``. Where no skip module sits (it has no parameters
    and draws no random number, so the backbone and the state dict are those of a network without the site)."""

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return x


def create_se(
    name: str,
    channels: int,
    spatial_dims: int = 2,
    reduction: int | None = None,
    aggregation: str = "add",
    kernels: str = "eager",
    gate_scale: float = 1.0,
    options: Mapping[str, Any] | None = None,
    gating_channels: int | None = None,
) -> nn.Module:
    """Build a NEW recalibration module for ``channels`` feature maps (never share one between blocks).

    ``name`` is a registered module (:func:`scseg.se_options.module_names`): ``none`` (an identity with zero
    parameters), ``cse``, ``sse``, ``scse``, ... ``reduction`` (None: the module's default), ``aggregation`` and
    ``gate_scale`` are the shared ``se.*`` settings, ``options`` the module's own; each module receives only the
    options it declares. ``aggregation`` is validated for every name, so a typo in a sweep fails early.

    Every recalibration module of every network must come from here (the architectures get it as ``se_factory``):
    the module is initialised from its own generator, seeded by :func:`_next_se_seed`, and the global RNG stream is
    left exactly where it was. So at a given seed every module (any options or positions) starts from identical
    backbone weights, and the module's weights are still a function of the seed. The built module carries
    ``se_name`` and ``se_options`` (what the gate capture and the model summary read).

    ``kernels``: ``eager`` (ATen operations, the default for library use), ``fused`` (scseg.models.se_fused: the
    same function in fewer passes over memory, CPU; built on first use) or ``auto`` (fused when it builds); only
    modules whose spec declares ``fused_kernels`` receive it. ``gate_scale`` (``se.gate_scale``) multiplies every
    sigmoid gate; 1 is the paper's block.

    ``gating_channels``: given for a skip site (``scseg.models.blocks.skip_site``), the channels of the gating
    signal; a skip module (the attention gate) needs it and a block module refuses it. ``none`` at a skip site is
    :class:`PassSkip`.
    """
    check_se_options(name, aggregation, spatial_dims)
    spec = module_spec(name)
    if spec.builder is None:
        return nn.Identity() if gating_channels is None else PassSkip()
    if spec.placement == "skip" and gating_channels is None:
        raise ValueError(
            f"SE module {name!r} sits on skip connections (se.positions: [skip]) and needs the gating signal's "
            f"channels (gating_channels); modules for block sites: {', '.join(_block_modules())}"
        )
    if spec.placement == "block" and gating_channels is not None:
        raise ValueError(
            f"SE module {name!r} sits after blocks and takes no gating signal; modules for skip sites: "
            f"{', '.join(module_names(placement='skip'))}"
        )
    values = resolve_module_options(spec, reduction, aggregation, gate_scale, options)
    kwargs = dict(values)
    if spec.fused_kernels:
        kwargs["kernels"] = resolve_mode(kernels)
    builder = load(spec.builder)
    seed = _next_se_seed()
    # Only the CPU generator is forked and reseeded: parameters are created on the CPU, and reseeding CUDA
    # generators (torch.manual_seed does) would change the dropout masks of a later GPU run.
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        if gating_channels is None:
            module = builder(channels, spatial_dims=spatial_dims, **kwargs)
        else:
            module = builder(channels, gating_channels, spatial_dims=spatial_dims, **kwargs)
    module.se_name = name
    module.se_options = values
    return module


def _block_modules() -> list[str]:
    return list(module_names(placement="block"))
