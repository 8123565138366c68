"""Small building blocks shared by the 2D networks: conv-norm-act stacks, size matching, deterministic unpooling."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

NORMS = ("batch", "instance", "group", "none")

# Builds a fresh SE module for a given channel count (a partial of scseg.models.se.create_se).
SEFactory = Callable[[int], nn.Module]


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
    rows = torch.arange(2 * h, device=x.device).unsqueeze(1)
    cols = torch.arange(2 * w, device=x.device).unsqueeze(0)
    flat_position = rows * width + cols  # index of each window pixel in the (height, width) frame
    with torch.no_grad():
        # float64 holds every index exactly (< 2^53); nearest upsampling has no integer kernel
        window_index = F.interpolate(indices.to(torch.float64), scale_factor=2, mode="nearest")
        keep = (window_index == flat_position).to(x.dtype)
    out = F.interpolate(x, scale_factor=2, mode="nearest") * keep
    return F.pad(out, [0, width - 2 * w, 0, height - 2 * h])
