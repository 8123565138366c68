"""Small building blocks shared by the 2D networks: conv-norm-act stacks, size matching, deterministic unpooling."""

from __future__ import annotations

from collections.abc import Callable, Collection

import torch
import torch.nn.functional as F
from torch import nn

from scseg.models.se import PassSkip
from scseg.se_options import SKIP_POSITIONS, site_name

NORMS = ("batch", "instance", "group", "none")

# Builds a fresh SE module for a given channel count (a partial of scseg.models.se.create_se); a skip site also
# passes ``gating_channels=``.
SEFactory = Callable[..., nn.Module]


def se_site(se_factory: SEFactory, chosen: Collection[str], position: str, level: int, channels: int) -> nn.Module:
    """The recalibration module of one SE site: a new one when ``position`` is among ``chosen``, else an identity.

    The architectures declare their sites through this (position and resolution level, 1 = full resolution), and
    the module is tagged with them (``se_site``: ``enc1``, ``bottleneck``, ``dec2_in``, ``dec1``; ``se_position``),
    so gate maps and ``scseg-gates`` name blocks by the architecture's declaration, not by attribute paths. An
    identity builds nothing and draws no random number, so positions left out never change the backbone.
    """
    if position not in chosen:
        return nn.Identity()
    module = se_factory(channels)
    module.se_site = site_name(position, level)
    module.se_position = position
    return module


def skip_site(
    se_factory: SEFactory, chosen: Collection[str], level: int, channels: int, gating_channels: int
) -> nn.Module:
    """The module on the skip connection of resolution ``level``: a new skip module (the attention gate) when
    ``skip`` is among ``chosen``, else :class:`~scseg.models.se.PassSkip`. Called as ``module(skip, g)`` before the
    concatenation, ``g`` the decoder's coarser map (``gating_channels`` channels, any spatial size).

    Tagged like :func:`se_site` (``se_site`` = ``skip2``, ``skip1``; ``se_position`` = ``skip``). ``PassSkip``
    builds nothing and draws no random number, so a network without skip modules keeps its backbone and state dict.
    """
    if not set(SKIP_POSITIONS) & set(chosen):
        return PassSkip()
    module = se_factory(channels, gating_channels=gating_channels)
    module.se_site = site_name(SKIP_POSITIONS[0], level)
    module.se_position = SKIP_POSITIONS[0]
    return module


def make_norm(norm: str, channels: int, groups: int = 8) -> nn.Module:
    """Normalisation layer by name; ``group`` uses ``min(groups, channels)`` groups that divide ``channels``."""
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if norm == "group":
        g = min(groups, channels)
        while channels % g:
            g -= 1
        return nn.GroupNorm(g, channels)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"unknown normalisation {norm!r}; valid choices: {', '.join(NORMS)}")


class ConvNormAct(nn.Sequential):
    """Conv (same padding, with bias) -> norm -> ReLU, optionally followed by dropout."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, norm: str = "batch", dropout: float = 0.0
    ) -> None:
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd to keep the spatial size, got {kernel_size}")
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
            make_norm(norm, out_channels),
            nn.ReLU(inplace=True),
        ]
        if dropout > 0:
            layers.append(nn.Dropout2d(dropout))
        super().__init__(*layers)


def match_size(x: torch.Tensor, size: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """Centre-crop or zero-pad the trailing two dimensions of ``x`` to ``size`` (H, W)."""
    dh, dw = size[0] - x.shape[-2], size[1] - x.shape[-1]
    if dh == 0 and dw == 0:
        return x
    # F.pad with negative values crops.
    return F.pad(x, [dw // 2, dw - dw // 2, dh // 2, dh - dh // 2])


def check_min_size(x: torch.Tensor, n_pools: int, arch: str) -> None:
    """Fail with a clear message when the input is too small for the number of 2x2 poolings."""
    minimum = 2**n_pools
    if x.shape[-2] < minimum or x.shape[-1] < minimum:
        raise ValueError(
            f"{arch} with {n_pools} poolings needs inputs of at least {minimum} x {minimum} pixels, "
            f"got {tuple(x.shape[-2:])}; pad the slices or reduce the depth"
        )


def max_unpool2d_deterministic(x: torch.Tensor, indices: torch.Tensor, output_size: tuple[int, int]) -> torch.Tensor:
    """Inverse of ``max_pool2d(kernel_size=2, stride=2, return_indices=True)``.

    Torch's ``max_unpool2d`` refuses to run under ``torch.use_deterministic_algorithms(True)`` on CUDA; this
    version repeats every pooled value over its 2x2 window (nearest upsampling) and keeps it only where the pooled
    index points. Upsampling and the mask keep ``x``'s memory format, so a channels-last network stays
    channels-last (an expand + reshape would copy back to NCHW and the next convolution back again: 3x slower).
    Values and gradients are exact copies, so the result is bit-identical to ``max_unpool2d``.
    """
    n, c, h, w = x.shape
    height, width = output_size
    with torch.no_grad():
        # Where in its 2x2 window each pooled maximum sat (0..3): small integers, exact in every float dtype (MPS
        # has no float64), and nearest upsampling has no integer kernel. Pooling windows start at (2i, 2j).
        window_row = indices.div(width, rounding_mode="floor") - 2 * torch.arange(h, device=x.device).view(h, 1)
        window_col = indices.remainder(width) - 2 * torch.arange(w, device=x.device).view(1, w)
        slot = F.interpolate((2 * window_row + window_col).to(x.dtype), scale_factor=2, mode="nearest")
        rows = torch.arange(2 * h, device=x.device).view(2 * h, 1) % 2
        cols = torch.arange(2 * w, device=x.device).view(1, 2 * w) % 2
        keep = (slot == (2 * rows + cols).to(x.dtype)).to(x.dtype)
    out = F.interpolate(x, scale_factor=2, mode="nearest") * keep
    return F.pad(out, [0, width - 2 * w, 0, height - 2 * h])


class _Pointwise(torch.autograd.Function):
    """``W x + b`` at every pixel (a 1x1 convolution) as one matrix product per sample, for either memory layout.

    Why: ATen sends a 1x1 convolution with many output channels to its slow im2col path, which on a channels-last
    input converts the input and the gradients to NCHW and back (a quarter of a width=small U-Net's step at
    256 x 256 with 28 classes). Here ``x.flatten(2)`` is a view in both layouts, the output is NCHW-contiguous
    (what the loss's softmax over classes reads fastest) and the input gradient comes back in ``x``'s layout.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        n, c = x.shape[:2]
        k = weight.shape[0]
        out = torch.bmm(weight.reshape(1, k, c).to(x.dtype).expand(n, k, c), x.flatten(2))  # (N, K, P)
        if bias is not None:
            out += bias.to(out.dtype).reshape(1, k, 1)
        return out.reshape(n, k, *x.shape[2:])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        n, c = x.shape[:2]
        k = weight.shape[0]
        g = grad.to(x.dtype).reshape(n, k, -1)  # (N, K, P)
        w = weight.reshape(k, c).to(x.dtype)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            if x.dim() > 2 and x.stride(1) == 1 and not x.is_contiguous():  # channels-last: (N, P, C) rows
                rows = torch.bmm(g.transpose(1, 2), w.expand(n, k, c))  # (N, P, C)
                grad_x = rows.reshape(n, *x.shape[2:], c).movedim(-1, 1)
            else:
                grad_x = torch.bmm(w.t().expand(n, c, k), g).reshape(x.shape)
        if ctx.needs_input_grad[1]:
            grad_w = torch.bmm(g, x.flatten(2).transpose(1, 2)).sum(0).reshape(weight.shape).to(weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = g.sum(dim=(0, 2)).to(weight.dtype)
        return grad_x, grad_w, grad_b


class PointwiseConv2d(nn.Conv2d):
    """A 1x1 ``nn.Conv2d`` (same parameters, state-dict keys and initialisation) that takes a channels-last input
    through :class:`_Pointwise` and returns NCHW logits: the networks' classifiers, whose 28-class outputs at full
    resolution are the largest tensors of a step. The loss's softmax over classes is 3x slower on channels-last
    logits, and ATen's 1x1 convolution of a channels-last input 3x slower than this (measured at 256 x 256)."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # NCHW: ATen's own path is as fast, and keeps earlier runs' numbers bit for bit. Under torch.compile the
        # compiler lowers the convolution itself (custom functions are eager-mode work; see scseg.models.se)
        if x.is_contiguous() or torch.compiler.is_compiling():
            return super().forward(x)
        return _Pointwise.apply(x, self.weight, self.bias)
