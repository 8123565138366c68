"""Checks and layer choices shared by the attention modules (one place, so every module words its errors alike)."""

from __future__ import annotations

import math
from numbers import Real

import torch
from torch import nn


def check_spatial_dims(spatial_dims: int) -> int:
    """The modules are written once for 2D and 3D feature maps; anything else is a configuration error."""
    if isinstance(spatial_dims, bool) or spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    return int(spatial_dims)


def conv_cls(spatial_dims: int) -> type[nn.Conv2d] | type[nn.Conv3d]:
    return nn.Conv2d if check_spatial_dims(spatial_dims) == 2 else nn.Conv3d


def batch_norm_cls(spatial_dims: int) -> type[nn.BatchNorm2d] | type[nn.BatchNorm3d]:
    return nn.BatchNorm2d if check_spatial_dims(spatial_dims) == 2 else nn.BatchNorm3d


def check_int(module: str, option: str, value: object, low: int, high: int | None = None, why: str = "") -> int:
    """An integer option in ``[low, high]`` (``high=None``: no upper bound); the error names the option and range."""
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low and (high is None or value <= high)
    if not ok:
        valid = f"an integer >= {low}" if high is None else f"an integer between {low} and {high}"
        reason = f" ({why})" if why else ""
        raise ValueError(f"{module}: {option} must be {valid}{reason}, got {value!r}")
    return int(value)  # type: ignore[arg-type]


def check_real(module: str, option: str, value: object, positive: bool = False) -> float:
    """A finite real option (optionally > 0); the error names the option and range."""
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(float(value))
    if ok and positive:
        ok = float(value) > 0  # type: ignore[arg-type]
    if not ok:
        valid = "a finite number > 0" if positive else "a finite number"
        raise ValueError(f"{module}: {option} must be {valid}, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def check_reduction(module: str, channels: int, reduction: object) -> int:
    """``channels // reduction`` hidden channels, at least one."""
    check_int(module, "channels", channels, 1)
    check_int(module, "reduction", reduction, 1, channels, f"channels // reduction >= 1 with channels={channels}")
    return channels // reduction  # type: ignore[operator]


def check_input(module: str, x: torch.Tensor, channels: int, spatial_dims: int, name: str = "x") -> None:
    """A wrong rank or channel count would otherwise surface as an obscure broadcasting or convolution error."""
    if x.ndim != spatial_dims + 2 or x.shape[1] != channels:
        raise ValueError(
            f"{module} built for {channels} channels and spatial_dims={spatial_dims} expects {name} of shape "
            f"(N, {channels}, {', '.join(['*'] * spatial_dims)}), got {tuple(x.shape)}"
        )


def spatial_axes(x: torch.Tensor) -> tuple[int, ...]:
    return tuple(range(2, x.ndim))


def check_odd(module: str, option: str, value: object) -> int:
    """An odd kernel size: ``padding = k // 2`` then keeps the size on both sides."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value % 2 == 0:
        raise ValueError(f"{module}: {option} must be an odd integer >= 1 (so padding keeps the size), got {value!r}")
    return int(value)
