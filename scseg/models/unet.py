"""2D U-Net as used in the scSE paper: encoder blocks, bottleneck, decoder blocks with skip concatenation."""

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
    match_size,
    se_site,
    skip_site,
)
from scseg.se_options import ALL_SE_POSITIONS, DEFAULT_SE_POSITIONS, resolve_positions

UPSAMPLING = ("nearest", "bilinear", "transposed")


class UNetBlock(nn.Sequential):
    """``convs_per_block`` x (conv -> norm -> ReLU), then this block's own SE module."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        convs_per_block: int,
        norm: str,
        dropout: float,
        se: nn.Module,
    ) -> None:
        convs = [
            ConvNormAct(in_channels if i == 0 else out_channels, out_channels, kernel_size, norm)
            for i in range(convs_per_block)
        ]
        tail = [nn.Dropout2d(dropout)] if dropout > 0 else []
        super().__init__(*convs, *tail, se)


class UNet(nn.Module):
    """U-Net (Ronneberger et al.) in the configuration of Roy et al. 2018.

    Args:
        in_channels: input channels (modalities x 2.5D context slices).
        num_classes: output classes including background; the model returns logits.
        filters: feature maps of every block (the paper: 64, constant over depth).
        depth: number of encoder blocks = number of 2x2 max-poolings (the paper: 4).
        kernel_size: convolution kernel (the paper: 5).
        convs_per_block: convolutions per block (the paper: 2).
        norm: ``batch`` (paper), ``instance``, ``group`` or ``none``.
        dropout: Dropout2d probability at the end of each block (before SE), 0 disables.
        upsampling: ``nearest`` (default, parameter-free), ``bilinear`` (parameter-free) or ``transposed``
            (a learned 2x2 stride-2 transposed convolution).
        se_factory: builds a new SE module for a channel count; one per block at ``se_positions``.
        se_positions: which blocks get SE: any of ``encoder``, ``bottleneck``, ``decoder_input`` (the concatenation
            of upsampled map and skip, before a decoder block's convolutions), ``decoder`` (the paper: encoder and
            decoder); the others keep an identity. ``skip`` (a skip module such as the attention gate, alone): every
            skip is gated before the concatenation, with the decoder's coarser map (before upsampling) as gating
            signal, as in Attention U-Net (Oktay et al. 2018).
        se_in_bottleneck: alias that adds ``bottleneck`` to ``se_positions`` (older configs).

    With the paper's settings, 1 input channel and 28 classes the network has 2,157,276 parameters
    (convolutions carry biases); scSE (add, r = 2) adds 4,257 per block.
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
        kernel_size: int = 5,
        convs_per_block: int = 2,
        norm: str = "batch",
        dropout: float = 0.0,
        upsampling: str = "nearest",
        se_positions: Sequence[str] = DEFAULT_SE_POSITIONS,
        se_in_bottleneck: bool = False,
    ) -> None:
        super().__init__()
        if upsampling not in UPSAMPLING:
            raise ValueError(f"unknown upsampling {upsampling!r}; valid choices: {', '.join(UPSAMPLING)}")
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.depth = depth
        self.upsampling = upsampling
        self.se_positions = resolve_positions(se_positions, se_in_bottleneck)

        def se_at(position: str, level: int, channels: int = filters) -> nn.Module:
            return se_site(se_factory, self.se_positions, position, level, channels)

        def block(cin: int, se: nn.Module) -> UNetBlock:
            return UNetBlock(cin, filters, kernel_size, convs_per_block, norm, dropout, se)

        self.encoders = nn.ModuleList(
            [block(in_channels if i == 0 else filters, se_at("encoder", i + 1)) for i in range(depth)]
        )
        self.bottleneck = block(filters, se_at("bottleneck", depth + 1))
        self.upsamplers = nn.ModuleList(
            [
                nn.ConvTranspose2d(filters, filters, kernel_size=2, stride=2)
                if upsampling == "transposed"
                else nn.Identity()
                for _ in range(depth)
            ]
        )
        # decoder i works at resolution level depth - i (the deepest first)
        self.decoder_inputs_se = nn.ModuleList([se_at("decoder_input", depth - i, 2 * filters) for i in range(depth)])
        self.decoders = nn.ModuleList([block(2 * filters, se_at("decoder", depth - i)) for i in range(depth)])
        # skip i enters decoder i: gated by the decoder's input before upsampling (filters channels, coarser)
        self.skip_gates = nn.ModuleList(
            [skip_site(se_factory, self.se_positions, depth - i, filters, filters) for i in range(depth)]
        )
        self.classifier = PointwiseConv2d(filters, num_classes)

    def _upsample(self, i: int, x: torch.Tensor, size: torch.Size) -> torch.Tensor:
        if self.upsampling == "transposed":
            return match_size(self.upsamplers[i](x), size)
        if self.upsampling == "bilinear":
            return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return F.interpolate(x, size=size, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_min_size(x, self.depth, "U-Net")
        skips = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottleneck(x)
        for i, decoder in enumerate(self.decoders):
            skip = self.skip_gates[i](skips[-1 - i], x)
            x = decoder(self.decoder_inputs_se[i](torch.cat([self._upsample(i, x, skip.shape[-2:]), skip], dim=1)))
        return self.classifier(x)
