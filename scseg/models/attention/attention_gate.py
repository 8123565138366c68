"""Additive attention gate (Oktay et al., "Attention U-Net: Learning Where to Look for the Pancreas", MIDL 2018),
in the form of MONAI's ``AttentionUnet`` ``AttentionBlock``.

A skip connection ``x`` (``F_l`` channels) is gated by a coarser decoder signal ``g`` (``F_g`` channels):
``alpha = sigmoid(BN(psi(relu(BN(W_g g) + BN(W_x x)))))`` with 1x1 convolutions ``W_x: F_l -> F_int``,
``W_g: F_g -> F_int``, ``psi: F_int -> 1``; the output is ``x * alpha``.

Choices:

- Resolution: MONAI's block expects ``g`` already at ``x``'s size (its caller upsamples with a transposed
  convolution); Oktay et al. instead subsample ``x`` with a strided ``W_x`` and upsample ``alpha``. Here ``g``
  may come at any size and is resampled to ``x``'s spatial size first, by (bi/tri)linear interpolation
  (``align_corners=False``), so all three projections and BatchNorms run at ``x``'s resolution as in MONAI.
- Every convolution has a bias, as MONAI's ``Convolution`` (``conv_only=True``) does, even though each is
  followed by BatchNorm (which makes the bias inert in training mode; it is counted in ``parameter_count``).
- ``inter_channels`` (``F_int``) defaults to ``F_l // 2``, as MONAI's ``AttentionLayer``.
- No dropout (MONAI's default 0.0).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from scseg.models.attention._common import batch_norm_cls, check_input, check_int, check_spatial_dims, conv_cls


def _inter(channels: int, gating_channels: int, spatial_dims: int, inter_channels: int | None) -> int:
    check_spatial_dims(spatial_dims)
    check_int("AttentionGate", "channels", channels, 1)
    check_int("AttentionGate", "gating_channels", gating_channels, 1)
    if inter_channels is None:
        if channels // 2 < 1:
            raise ValueError(
                f"AttentionGate: inter_channels must be an integer >= 1; its default, channels // 2, is 0 for "
                f"channels={channels}, so pass it explicitly"
            )
        return channels // 2
    return check_int("AttentionGate", "inter_channels", inter_channels, 1)


def parameter_count(
    channels: int, gating_channels: int, spatial_dims: int = 2, inter_channels: int | None = None
) -> int:
    """``W_x``: ``F_l*F_int + F_int`` + BN ``2*F_int``; ``W_g``: ``F_g*F_int + F_int`` + BN ``2*F_int``;
    ``psi``: ``F_int + 1`` + BN ``2``. In all ``F_int * (F_l + F_g + 7) + 3``."""
    f_int = _inter(channels, gating_channels, spatial_dims, inter_channels)
    w_x = channels * f_int + f_int + 2 * f_int
    w_g = gating_channels * f_int + f_int + 2 * f_int
    psi = f_int + 1 + 2
    return w_x + w_g + psi


def multiply_adds(
    channels: int, spatial: tuple[int, ...], *, gating_channels: int, inter_channels: int | None = None
) -> int:
    """Per sample, at ``x``'s P pixels (``g`` is resampled there first; the interpolation is not counted, as
    pooling is not): ``W_x`` (``F_l*F_int*P``), ``W_g`` (``F_g*F_int*P``), ``psi`` (``F_int*P``) and the gating
    product ``x * alpha`` (``F_l*P``)."""
    f_int = _inter(channels, gating_channels, len(spatial), inter_channels)
    pixels = math.prod(spatial)
    return f_int * (channels + gating_channels + 1) * pixels + channels * pixels


class AttentionGate(nn.Module):
    """``x * alpha(x, g)``; ``alpha`` is one spatial map ``(N, 1, *spatial)`` at ``x``'s resolution."""

    def __init__(
        self, channels: int, gating_channels: int, spatial_dims: int = 2, inter_channels: int | None = None
    ) -> None:
        super().__init__()
        f_int = _inter(channels, gating_channels, spatial_dims, inter_channels)
        conv, norm = conv_cls(spatial_dims), batch_norm_cls(spatial_dims)
        self.channels = channels
        self.gating_channels = gating_channels
        self.spatial_dims = spatial_dims
        self.inter_channels = f_int
        self.w_x = nn.Sequential(conv(channels, f_int, kernel_size=1), norm(f_int))
        self.w_g = nn.Sequential(conv(gating_channels, f_int, kernel_size=1), norm(f_int))
        self.psi = nn.Sequential(conv(f_int, 1, kernel_size=1), norm(1))

    def resample(self, g: torch.Tensor, size: torch.Size) -> torch.Tensor:
        """``g`` at ``size`` (unchanged when it is already there)."""
        if g.shape[2:] == size:
            return g
        mode = "bilinear" if self.spatial_dims == 2 else "trilinear"
        return F.interpolate(g, size=tuple(size), mode=mode, align_corners=False)

    def maps(self, x: torch.Tensor, g: torch.Tensor) -> dict[str, torch.Tensor]:
        check_input("AttentionGate", x, self.channels, self.spatial_dims)
        check_input("AttentionGate", g, self.gating_channels, self.spatial_dims, name="g")
        if g.shape[0] != x.shape[0]:
            raise ValueError(f"AttentionGate: x and g need the same batch size, got {x.shape[0]} and {g.shape[0]}")
        g = self.resample(g, x.shape[2:])
        hidden = torch.relu(self.w_x(x) + self.w_g(g))
        return {"attention": torch.sigmoid(self.psi(hidden))}

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return x * self.maps(x, g)["attention"]
