"""SkipDeconv-Net (SD-Net, Roy et al. 2017): max-pooling with indices, unpooling with them, skip concatenation."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from scseg.models.blocks import (
    ConvNormAct,
    PointwiseConv2d,
    SEFactory,
    check_min_size,
    max_unpool2d_deterministic,
    se_site,
    skip_site,
)
from scseg.se_options import ALL_SE_POSITIONS, DEFAULT_SE_POSITIONS, resolve_positions


class SDNetBlock(nn.Sequential):
    """One conv -> norm -> ReLU (-> dropout), then this block's own SE module."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, norm: str, dropout: float, se: nn.Module
    ) -> None:
        super().__init__(ConvNormAct(in_channels, out_channels, kernel_size, norm, dropout), se)


class SDNet(nn.Module):
    """SkipDeconv-Net.

    Args:
        in_channels: input channels (modalities x 2.5D context slices).
        num_classes: output classes including background; the model returns logits.
        filters: feature maps of every block (64 in the paper).
        depth: encoder blocks = max-poolings (4).
        kernel_size: convolution kernel (7 in the original SD-Net; the authors' generic block uses 5).
        norm: ``batch`` (paper), ``instance``, ``group`` or ``none``.
        dropout: Dropout2d probability after each block's convolution, 0 disables.
        se_factory: builds a new SE module for a channel count; one per block at ``se_positions``.
        se_positions: which blocks get SE: any of ``encoder``, ``bottleneck``, ``decoder_input`` (the unpooled map
            concatenated with its skip, before a decoder block's convolution), ``decoder`` (the paper: encoder and
            decoder); the others keep an identity. ``skip`` (a skip module such as the attention gate, alone): every
            skip is gated before the concatenation, with the decoder's input before unpooling as gating signal.
        se_in_bottleneck: alias that adds ``bottleneck`` to ``se_positions`` (older configs).

    Unpooling uses :func:`max_unpool2d_deterministic`, so the network runs under
    ``torch.use_deterministic_algorithms(True)``. With the defaults, 1 input channel and 28 classes it has
    2,415,132 parameters.
    """

    # The SE positions this architecture has (of scseg.se_options.ALL_SE_POSITIONS); create_model refuses others.
    SE_POSITIONS = ALL_SE_POSITIONS

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        se_factory: SEFactory,
        filters: int = 64,
        depth: int = 4,
        kernel_size: int = 7,
        norm: str = "batch",
        dropout: float = 0.0,
        se_positions: Sequence[str] = DEFAULT_SE_POSITIONS,
        se_in_bottleneck: bool = False,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.depth = depth
        self.se_positions = resolve_positions(se_positions, se_in_bottleneck)

        def se_at(position: str, level: int, channels: int = filters) -> nn.Module:
            return se_site(se_factory, self.se_positions, position, level, channels)

        self.encoders = nn.ModuleList(
            [
                SDNetBlock(
                    in_channels if i == 0 else filters, filters, kernel_size, norm, dropout, se_at("encoder", i + 1)
                )
                for i in range(depth)
            ]
        )
        self.bottleneck = SDNetBlock(filters, filters, kernel_size, norm, dropout, se_at("bottleneck", depth + 1))
        # decoder i works at resolution level depth - i (the deepest first)
        self.decoder_inputs_se = nn.ModuleList([se_at("decoder_input", depth - i, 2 * filters) for i in range(depth)])
        self.decoders = nn.ModuleList(
            [
                SDNetBlock(2 * filters, filters, kernel_size, norm, dropout, se_at("decoder", depth - i))
                for i in range(depth)
            ]
        )
        # skip i enters decoder i: gated by the decoder's input before unpooling (filters channels, coarser)
        self.skip_gates = nn.ModuleList(
            [skip_site(se_factory, self.se_positions, depth - i, filters, filters) for i in range(depth)]
        )
        self.classifier = PointwiseConv2d(filters, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_min_size(x, self.depth, "SD-Net")
        skips, indices = [], []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
            x, idx = F.max_pool2d(x, 2, return_indices=True)
            indices.append(idx)
        x = self.bottleneck(x)
        for i, decoder in enumerate(self.decoders):
            skip = self.skip_gates[i](skips[-1 - i], x)
            x = max_unpool2d_deterministic(x, indices[-1 - i], (skip.shape[-2], skip.shape[-1]))
            x = decoder(self.decoder_inputs_se[i](torch.cat([x, skip], dim=1)))
        return self.classifier(x)
