"""Project & Excite (Rickmann, Roy, Sarasua, Navab, Wachinger, "'Project & Excite' Modules for Segmentation of
Volumetric Medical Scans", MICCAI 2019): the authors' 3D successor of scSE (Roy et al., MICCAI 2018).

Instead of one global average per channel (cSE), *project*: average ``x`` along each spatial axis separately, i.e.
for 3D one descriptor per axis (lengths D, H, W, each the mean over the other two axes), broadcast-add them to a
full-size tensor ``z`` (``z[c, d, h, w] = z_D[c, d] + z_H[c, h] + z_W[c, w]``), then *excite*: 1x1 convolution
``C -> C // r``, ReLU, 1x1 convolution ``C // r -> C``, sigmoid, and multiply ``x`` by that full-size gate.

Choices:

- reduction defaults to 2, the default ``reduction_ratio`` of the authors' implementation (``ProjectExciteLayer``
  in ai-med/squeeze_and_excitation); the paper's own text could not be checked here, so this default follows the
  code.
- Both convolutions have biases (PyTorch's default in that code).
- 2D (the paper is 3D only): the same with two projections, the mean over W (length H) and the mean over H
  (length W).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from scseg.models.attention._common import check_input, check_reduction, check_spatial_dims, conv_cls


def _hidden(channels: int, spatial_dims: int, reduction: int) -> int:
    check_spatial_dims(spatial_dims)
    return check_reduction("ProjectExcite", channels, reduction)


def parameter_count(channels: int, spatial_dims: int = 2, *, reduction: int = 2) -> int:
    """Two 1x1 convolutions with biases: ``C*h + h`` and ``h*C + C`` with ``h = C // r``."""
    hidden = _hidden(channels, spatial_dims, reduction)
    return (channels * hidden + hidden) + (hidden * channels + channels)


def multiply_adds(channels: int, spatial: tuple[int, ...], *, reduction: int = 2) -> int:
    """Per sample: both 1x1 convolutions run on the full-size ``z`` (``2*C*h*P``), then the gating product
    (``C*P``); the projections' means and their broadcast sum are not counted, as pooling is not."""
    hidden = _hidden(channels, len(spatial), reduction)
    pixels = math.prod(spatial)
    return 2 * channels * hidden * pixels + channels * pixels


class ProjectExcite(nn.Module):
    """Full-size gate from the sum of per-axis projections."""

    def __init__(self, channels: int, spatial_dims: int = 2, *, reduction: int = 2) -> None:
        super().__init__()
        hidden = _hidden(channels, spatial_dims, reduction)
        conv = conv_cls(spatial_dims)
        self.channels = channels
        self.spatial_dims = spatial_dims
        self.squeeze = conv(channels, hidden, kernel_size=1)
        self.excite = conv(hidden, channels, kernel_size=1)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """``z``: the broadcast sum of the per-axis means, ``(N, C, *spatial)``."""
        check_input("ProjectExcite", x, self.channels, self.spatial_dims)
        axes = range(2, x.ndim)
        z = None
        for i in axes:
            projection = x.mean(dim=tuple(a for a in axes if a != i), keepdim=True)
            z = projection if z is None else z + projection
        return z

    def maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.project(x)
        return {"attention": torch.sigmoid(self.excite(torch.relu(self.squeeze(z))))}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.maps(x)["attention"]
