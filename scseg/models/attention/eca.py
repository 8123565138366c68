"""ECA, efficient channel attention (Wang et al., "ECA-Net: Efficient Channel Attention for Deep Convolutional
Neural Networks", CVPR 2020): global average pooling, then a 1D convolution across the channel axis (local
cross-channel interaction without dimensionality reduction), then a sigmoid; the output is ``x * gate``.

The kernel size adapts to the channel count, ``k = psi(C) = |log2(C)/gamma + b/gamma|_odd`` (gamma=2, b=1), where
``|t|_odd`` is the odd number nearest to ``t``. Where two odd numbers are equally near (``t`` an even integer,
e.g. C=128 gives t=4) we take the larger, as the authors' code does (``t = int(...)``, then ``t + 1`` if even);
for every other ``t`` that code and "nearest odd" agree. Small channel counts give ``k = 1`` (a per-channel scale
and no cross-channel interaction), which is what the formula says. The convolution has no bias (as in the paper's
parameter count, ``k``) and zero padding ``(k - 1) / 2`` so the channel axis keeps its length. 3D: pooling over
``(D, H, W)``; the 1D convolution is the same.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from scseg.models.attention._common import check_input, check_int, check_odd, check_real, check_spatial_dims


def adaptive_kernel_size(channels: int, gamma: float = 2.0, b: float = 1.0) -> int:
    """The paper's ``|log2(C)/gamma + b/gamma|_odd`` (ties rounded up, as the authors' code)."""
    check_int("ECA", "channels", channels, 1)
    gamma = check_real("ECA", "gamma", gamma, positive=True)
    b = check_real("ECA", "b", b)
    t = int(abs(math.log2(channels) / gamma + b / gamma))
    return t if t % 2 else t + 1


def _kernel(channels: int, spatial_dims: int, gamma: float, b: float, kernel_size: int | None) -> int:
    check_spatial_dims(spatial_dims)
    adaptive = adaptive_kernel_size(channels, gamma, b)  # validates gamma and b even when a fixed size is given
    if kernel_size is None:
        return adaptive
    return check_odd("ECA", "kernel_size", kernel_size)


def parameter_count(
    channels: int, spatial_dims: int = 2, *, gamma: float = 2.0, b: float = 1.0, kernel_size: int | None = None
) -> int:
    """The 1D convolution's ``k`` weights (no bias); independent of ``spatial_dims``."""
    return _kernel(channels, spatial_dims, gamma, b, kernel_size)


def multiply_adds(
    channels: int, spatial: tuple[int, ...], *, gamma: float = 2.0, b: float = 1.0, kernel_size: int | None = None
) -> int:
    """Per sample: the 1D convolution across the channels, ``k`` per channel (``C*k``, zero padding counted as
    PyTorch computes it), and the gating product ``x * gate`` (``C*P``)."""
    k = _kernel(channels, len(spatial), gamma, b, kernel_size)
    return channels * k + channels * math.prod(spatial)


class ECA(nn.Module):
    """``x * sigmoid(conv1d_k(avgpool(x)))``; ``kernel_size=None`` picks ``k`` from the channel count."""

    def __init__(
        self,
        channels: int,
        spatial_dims: int = 2,
        *,
        gamma: float = 2.0,
        b: float = 1.0,
        kernel_size: int | None = None,
    ) -> None:
        super().__init__()
        k = _kernel(channels, spatial_dims, gamma, b, kernel_size)
        self.channels = channels
        self.spatial_dims = spatial_dims
        self.kernel_size = k
        self.conv = nn.Conv1d(1, 1, kernel_size=k, padding=(k - 1) // 2, bias=False)

    def channel_gate(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, *spatial) -> (N, C, 1, ...)``."""
        check_input("ECA", x, self.channels, self.spatial_dims)
        squeezed = x.flatten(2).mean(dim=2)  # (N, C)
        gate = torch.sigmoid(self.conv(squeezed.unsqueeze(1))).squeeze(1)  # channels as the 1D sequence
        return gate.reshape(*gate.shape, *([1] * self.spatial_dims))

    def maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"channel_gate": self.channel_gate(x)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.channel_gate(x)
