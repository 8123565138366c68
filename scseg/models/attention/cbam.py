"""CBAM, the convolutional block attention module (Woo et al., "CBAM: Convolutional Block Attention Module",
ECCV 2018): a channel gate, then a spatial gate computed on the channel-refined map.

- Channel gate: ``M_c = sigmoid(MLP(avgpool(x)) + MLP(maxpool(x)))`` with one MLP ``C -> C/r -> C`` (ReLU between)
  shared by both descriptors.
- Spatial gate on ``x' = x * M_c``: ``M_s = sigmoid(conv_kxk([mean_c(x'); max_c(x')]))``, one output channel.
- Output ``x' * M_s``.

Choices where paper and the authors' code (Jongchan/attention-module) differ:

- The MLP has biases, as ``nn.Linear`` in the authors' code (the paper writes ``W1(W0 .)`` without them). Both
  descriptors go through the same MLP, so the output bias enters the gate twice, as in that code.
- The spatial convolution has no bias and is *not* followed by BatchNorm: the paper's formula has neither, while
  the authors' code adds BatchNorm (which then absorbs the missing bias). Without BatchNorm the gate of one sample
  does not depend on the rest of the batch, the same as SE's gates in this project.
- The two spatial descriptors are stacked ``[mean; max]`` as in the paper (the authors' code stacks ``[max; mean]``;
  only the order of the convolution's input channels differs).
- 3D: the same with global pooling over ``(D, H, W)`` and a ``k x k x k`` convolution.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from scseg.models.attention._common import check_input, check_odd, check_reduction, check_spatial_dims, conv_cls


def _check(channels: int, spatial_dims: int, reduction: int, spatial_kernel: int) -> tuple[int, int]:
    check_spatial_dims(spatial_dims)
    hidden = check_reduction("CBAM", channels, reduction)
    return hidden, check_odd("CBAM", "spatial_kernel", spatial_kernel)


def parameter_count(channels: int, spatial_dims: int = 2, *, reduction: int = 16, spatial_kernel: int = 7) -> int:
    """Shared MLP ``C*h + h + h*C + C`` (``h = C // r``, with biases) plus the spatial ``2 -> 1`` convolution
    ``2 * k**spatial_dims`` (no bias)."""
    hidden, k = _check(channels, spatial_dims, reduction, spatial_kernel)
    mlp = channels * hidden + hidden + hidden * channels + channels
    spatial = 2 * k**spatial_dims
    return mlp + spatial


def multiply_adds(channels: int, spatial: tuple[int, ...], *, reduction: int = 16, spatial_kernel: int = 7) -> int:
    """Per sample: the shared MLP on both descriptors ``2 * 2*C*h``, the spatial ``2 -> 1`` convolution
    ``2 * k**d * P`` and the two gating products ``x * M_c`` and ``x' * M_s`` (``2 * C*P``); P pixels."""
    hidden, k = _check(channels, len(spatial), reduction, spatial_kernel)
    pixels = math.prod(spatial)
    return 4 * channels * hidden + 2 * k ** len(spatial) * pixels + 2 * channels * pixels


class CBAM(nn.Module):
    """Channel then spatial attention; ``maps`` exposes both gates for analyses."""

    def __init__(self, channels: int, spatial_dims: int = 2, *, reduction: int = 16, spatial_kernel: int = 7) -> None:
        super().__init__()
        hidden, k = _check(channels, spatial_dims, reduction, spatial_kernel)
        self.channels = channels
        self.spatial_dims = spatial_dims
        self.mlp_in = nn.Linear(channels, hidden)
        self.mlp_out = nn.Linear(hidden, channels)
        self.spatial = conv_cls(spatial_dims)(2, 1, kernel_size=k, padding=k // 2, bias=False)

    def channel_gate(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, *spatial) -> (N, C, 1, ...)``; both descriptors in one pass through the shared MLP."""
        check_input("CBAM", x, self.channels, self.spatial_dims)
        flat = x.flatten(2)
        n = x.shape[0]
        descriptors = torch.cat([flat.mean(dim=2), flat.amax(dim=2)], dim=0)  # (2N, C)
        logits = self.mlp_out(torch.relu(self.mlp_in(descriptors)))
        gate = torch.sigmoid(logits[:n] + logits[n:])
        return gate.reshape(*gate.shape, *([1] * self.spatial_dims))

    def spatial_gate(self, refined: torch.Tensor) -> torch.Tensor:
        """``(N, C, *spatial) -> (N, 1, *spatial)`` from the channel-refined map."""
        pooled = torch.cat([refined.mean(dim=1, keepdim=True), refined.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.spatial(pooled))

    def _gates(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        channel = self.channel_gate(x)
        refined = x * channel
        return channel, self.spatial_gate(refined), refined

    def maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        channel, spatial, _ = self._gates(x)
        return {"channel_gate": channel, "spatial_gate": spatial}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, spatial, refined = self._gates(x)
        return refined * spatial
