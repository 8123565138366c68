"""Squeeze-and-excitation recalibration blocks: cSE, sSE and scSE (Roy et al., MICCAI 2018).

Every block maps a feature map ``x`` of shape ``(N, C, *spatial)`` to a recalibrated map of the same shape.
One implementation serves 2D (``spatial_dims=2``) and 3D (``spatial_dims=3``) inputs. The gates are exposed
(``gate(x)``) so tests and analyses can inspect them directly.

Aggregations of scSE (the two recalibrated maps ``x*c`` and ``x*s``):

- ``add``  (MICCAI paper, default): ``x*c + x*s``, computed literally: autograd then keeps only ``x`` and the
  two small gates. The algebraically equal ``x * (c + s)`` keeps the broadcast full-size ``c + s`` as well
  (twice the memory; measured by ``scripts/bench_se_memory.py``).
- ``max``  (authors' code, best in the TMI paper): element-wise ``max(x*c, x*s)``. Because both gates are
  positive this equals ``x * g`` with ``g = max(c, s)`` where ``x >= 0`` and ``min(c, s)`` where ``x < 0``;
  on signed inputs it is *not* ``x * max(c, s)``. The ``where`` form keeps 25 % less for backward than
  ``max(x*c, x*s)`` (same script).
- ``mul``: ``(x*c) * (x*s)``.
- ``concat``: a 1x1 convolution from ``[x*c, x*s]`` (2C channels) back to C.
"""

from __future__ import annotations

import torch
from torch import nn

SE_VARIANTS = ("none", "cse", "sse", "scse")
AGGREGATIONS = ("add", "max", "mul", "concat")


def _conv_cls(spatial_dims: int) -> type[nn.Module]:
    if spatial_dims == 2:
        return nn.Conv2d
    if spatial_dims == 3:
        return nn.Conv3d
    raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")


class ChannelSE(nn.Module):
    """cSE: spatial squeeze, channel excitation. One gate value per channel, constant over space."""

    def __init__(self, channels: int, reduction: int = 2, spatial_dims: int = 2) -> None:
        super().__init__()
        _conv_cls(spatial_dims)  # validates spatial_dims
        hidden = _hidden_channels(channels, reduction)
        self.spatial_dims = spatial_dims
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """Channel gate of shape ``(N, C, 1, ..., 1)`` in (0, 1)."""
        squeezed = x.mean(dim=tuple(range(2, x.ndim)))
        excited = torch.sigmoid(self.fc2(torch.relu(self.fc1(squeezed))))
        return excited.reshape(*excited.shape, *([1] * self.spatial_dims))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class SpatialSE(nn.Module):
    """sSE: channel squeeze, spatial excitation. One gate value per voxel, constant over channels."""

    def __init__(self, channels: int, spatial_dims: int = 2) -> None:
        super().__init__()
        self.conv = _conv_cls(spatial_dims)(channels, 1, kernel_size=1)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """Spatial gate of shape ``(N, 1, *spatial)`` in (0, 1)."""
        return torch.sigmoid(self.conv(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class ConcurrentSE(nn.Module):
    """scSE: cSE and sSE computed from the same input, recombined by ``aggregation``."""

    def __init__(self, channels: int, reduction: int = 2, spatial_dims: int = 2, aggregation: str = "add") -> None:
        super().__init__()
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"unknown scSE aggregation {aggregation!r}; valid choices: {', '.join(AGGREGATIONS)}")
        self.aggregation = aggregation
        self.cse = ChannelSE(channels, reduction, spatial_dims)
        self.sse = SpatialSE(channels, spatial_dims)
        if aggregation == "concat":
            self.fuse = _conv_cls(spatial_dims)(2 * channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.cse.gate(x)
        s = self.sse.gate(x)
        if self.aggregation == "add":
            return x * c + x * s
        if self.aggregation == "max":
            return x * torch.where(x >= 0, torch.maximum(c, s), torch.minimum(c, s))
        if self.aggregation == "mul":
            return (x * c) * (x * s)
        return self.fuse(torch.cat([x * c, x * s], dim=1))


def _hidden_channels(channels: int, reduction: int) -> int:
    if reduction < 1 or channels // reduction < 1:
        raise ValueError(
            f"cSE needs channels // reduction >= 1, got channels={channels}, reduction={reduction}; "
            f"choose a reduction between 1 and {channels}"
        )
    return channels // reduction


def create_se(
    name: str, channels: int, spatial_dims: int = 2, reduction: int = 2, aggregation: str = "add"
) -> nn.Module:
    """Build a NEW recalibration block for ``channels`` feature maps (never share one between blocks).

    ``name`` is one of ``none`` (an identity with zero parameters), ``cse``, ``sse``, ``scse``.
    ``aggregation`` only matters for ``scse`` but is validated for every name, so a typo in a sweep fails early.
    """
    if name not in SE_VARIANTS:
        raise ValueError(f"unknown SE variant {name!r}; valid choices: {', '.join(SE_VARIANTS)}")
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown scSE aggregation {aggregation!r}; valid choices: {', '.join(AGGREGATIONS)}")
    _conv_cls(spatial_dims)
    if name == "none":
        return nn.Identity()
    if name == "sse":
        return SpatialSE(channels, spatial_dims)
    _hidden_channels(channels, reduction)
    if name == "cse":
        return ChannelSE(channels, reduction, spatial_dims)
    return ConcurrentSE(channels, reduction, spatial_dims, aggregation)
