"""Coordinate attention (Hou et al., "Coordinate Attention for Efficient Mobile Network Design", CVPR 2021).

2D, as in the paper and the authors' code (houqb/CoordAttention): average ``x`` over W (one descriptor per row,
length H) and over H (one per column, length W); concatenate the two along the spatial axis; one shared 1x1
convolution ``C -> mip`` with ``mip = max(min_channels, C // reduction)``, BatchNorm and h-swish; split back; a
1x1 convolution ``mip -> C`` per direction and a sigmoid give ``a_h`` (N, C, H, 1) and ``a_w`` (N, C, 1, W); the
output is ``x * a_h * a_w``.

Choices where the paper leaves it open (following the authors' code where it has an answer):

- All three 1x1 convolutions have biases (PyTorch's default in the authors' code; the paper does not say).
- BatchNorm after the shared convolution, as in the authors' code (the paper's Eq. 4 names only "a non-linear
  activation"). Its statistics run over the batch and over all H + W positions of the concatenated descriptor, so
  in training mode a sample's gates depend on the rest of the batch; in eval mode they do not.
- h-swish, ``t * relu6(t + 3) / 6``, as in the authors' code.
- 3D (not in the paper): one descriptor per spatial axis (average over the other two), i.e. lengths D, H and W,
  concatenated, through the same shared convolution + BatchNorm + h-swish, and a convolution back to C per axis;
  the output is ``x * a_d * a_h * a_w``. ``maps`` names them ``attention_d``, ``attention_h``, ``attention_w``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from scseg.models.attention._common import (
    batch_norm_cls,
    check_input,
    check_int,
    check_spatial_dims,
    conv_cls,
)

_AXES = {2: ("h", "w"), 3: ("d", "h", "w")}


def _mip(channels: int, spatial_dims: int, reduction: int, min_channels: int) -> int:
    check_spatial_dims(spatial_dims)
    check_int("CoordinateAttention", "channels", channels, 1)
    check_int("CoordinateAttention", "reduction", reduction, 1)
    check_int("CoordinateAttention", "min_channels", min_channels, 1)
    return max(min_channels, channels // reduction)


def parameter_count(channels: int, spatial_dims: int = 2, *, reduction: int = 32, min_channels: int = 8) -> int:
    """Shared conv ``C*mip + mip``, BatchNorm ``2*mip`` (weight and bias; running statistics are buffers), and one
    conv ``mip*C + C`` per spatial axis; ``mip = max(min_channels, C // reduction)``."""
    mip = _mip(channels, spatial_dims, reduction, min_channels)
    shared = channels * mip + mip
    norm = 2 * mip
    per_axis = mip * channels + channels
    return shared + norm + spatial_dims * per_axis


def multiply_adds(channels: int, spatial: tuple[int, ...], *, reduction: int = 32, min_channels: int = 8) -> int:
    """Per sample: the shared convolution on the concatenated descriptors (``C*mip*L``, L = H + W (+ D)), one
    convolution back per axis (``mip*C*L`` in all), and one gating product per axis (``d * C*P``)."""
    mip = _mip(channels, len(spatial), reduction, min_channels)
    length = sum(spatial)
    return 2 * channels * mip * length + len(spatial) * channels * math.prod(spatial)


class CoordinateAttention(nn.Module):
    """Direction-aware gates, one per spatial axis, multiplied into ``x``."""

    def __init__(self, channels: int, spatial_dims: int = 2, *, reduction: int = 32, min_channels: int = 8) -> None:
        super().__init__()
        mip = _mip(channels, spatial_dims, reduction, min_channels)
        conv = conv_cls(spatial_dims)
        self.channels = channels
        self.spatial_dims = spatial_dims
        self.mip = mip
        self.conv_in = conv(channels, mip, kernel_size=1)
        self.norm = batch_norm_cls(spatial_dims)(mip)
        # one per spatial axis, in the order (d,) h, w
        self.conv_out = nn.ModuleList(conv(mip, channels, kernel_size=1) for _ in range(spatial_dims))

    def maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``attention_<axis>``: ``(N, C, 1, .., L, .., 1)``, ``L`` the length of that axis."""
        check_input("CoordinateAttention", x, self.channels, self.spatial_dims)
        n, c = x.shape[:2]
        sizes = x.shape[2:]
        axes = range(2, x.ndim)
        # descriptor of axis i: average over the other spatial axes, laid out as (N, C, L_i)
        descriptors = [x.mean(dim=tuple(a for a in axes if a != i)).reshape(n, c, -1) for i in axes]
        trailing = [1] * (self.spatial_dims - 1)
        y = torch.cat(descriptors, dim=2).reshape(n, c, -1, *trailing)  # (N, C, sum L, 1[, 1])
        y = F.hardswish(self.norm(self.conv_in(y)))
        gates = {}
        for j, (part, conv) in enumerate(zip(torch.split(y, list(sizes), dim=2), self.conv_out)):
            shape = [size if k == j else 1 for k, size in enumerate(sizes)]
            gates[f"attention_{_AXES[self.spatial_dims][j]}"] = torch.sigmoid(conv(part)).reshape(n, c, *shape)
        return gates

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for gate in self.maps(x).values():
            out = out * gate
        return out
