"""QuickNAT (Roy et al., NeuroImage 2019): dense blocks, max-pooling with indices, unpooling with them, skips.

The authors' follow-up to the scSE paper, built from their reference code (ai-med/quickNAT_pytorch and
ai-med/nn-common-modules) so that the SE blocks sit where the authors put them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from scseg.models.blocks import (
    PointwiseConv2d,
    SEFactory,
    check_min_size,
    make_norm,
    max_unpool2d_deterministic,
    se_site,
    skip_site,
)
from scseg.se_options import ALL_SE_POSITIONS, DEFAULT_SE_POSITIONS, resolve_positions


class DenseBlock(nn.Module):
    """QuickNAT's dense block: norm-PReLU-conv kxk (F) -> concatenate with the input -> norm-PReLU-conv kxk (F) ->
    concatenate (input, both outputs) -> norm-PReLU-conv 1x1 (F).

    As in the reference code the block is pre-activated, also on the raw image in the first encoder block (a norm
    over the input channels), and one PReLU (a single slope) serves all three activations of the block.
    """

    def __init__(self, in_channels: int, num_filters: int, kernel_size: int, norm: str) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd to keep the spatial size, got {kernel_size}")
        padding = kernel_size // 2
        self.norm1 = make_norm(norm, in_channels)
        self.conv1 = nn.Conv2d(in_channels, num_filters, kernel_size, padding=padding)
        self.norm2 = make_norm(norm, in_channels + num_filters)
        self.conv2 = nn.Conv2d(in_channels + num_filters, num_filters, kernel_size, padding=padding)
        self.norm3 = make_norm(norm, in_channels + 2 * num_filters)
        self.conv3 = nn.Conv2d(in_channels + 2 * num_filters, num_filters, kernel_size=1)
        self.prelu = nn.PReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o1 = self.conv1(self.prelu(self.norm1(x)))
        o2 = self.conv2(self.prelu(self.norm2(torch.cat([x, o1], dim=1))))
        return self.conv3(self.prelu(self.norm3(torch.cat([x, o1, o2], dim=1))))


class QuickNATBlock(nn.Sequential):
    """A dense block, then this block's own SE module, then Dropout2d (the reference code's order: the SE block sees
    the features before dropout; the skip and the pooling see them after)."""

    def __init__(
        self, in_channels: int, num_filters: int, kernel_size: int, norm: str, dropout: float, se: nn.Module
    ) -> None:
        tail = [nn.Dropout2d(dropout)] if dropout > 0 else []
        super().__init__(DenseBlock(in_channels, num_filters, kernel_size, norm), se, *tail)


class QuickNAT(nn.Module):
    """QuickNAT: ``depth`` encoder dense blocks, a bottleneck dense block, ``depth`` decoder dense blocks, 1x1
    classifier.

    Args:
        in_channels: input channels (modalities x 2.5D context slices).
        num_classes: output classes including background; the model returns logits.
        num_filters: feature maps of every convolution (the paper: 64).
        depth: encoder blocks = 2x2 max-poolings with indices (the paper: 4).
        kernel_size: the dense blocks' two spatial convolutions (the paper: 5).
        norm: ``batch`` (paper), ``instance``, ``group`` or ``none``.
        dropout: Dropout2d probability after each encoder and decoder block (the paper: 0.2); the bottleneck has
            none, as in the reference code.
        se_factory: builds a new SE module for a channel count; one per block at ``se_positions``.
        se_positions: which blocks get SE: any of ``encoder``, ``bottleneck``, ``decoder_input`` (the
            concatenation ``(skip, unpooled)`` that enters a decoder block, 2F channels), ``decoder`` (the paper:
            encoder and decoder); the others keep an identity. ``skip`` (a skip module such as the attention gate,
            alone): every skip is gated before the concatenation, with the decoder's input before unpooling as
            gating signal.
        se_in_bottleneck: alias that adds ``bottleneck`` to ``se_positions`` (older configs).

    SE sits after each dense block and before the pooling, so the skip carries the recalibrated features. A decoder
    block unpools with its encoder's indices to the skip's size and reads ``(skip, unpooled)``: 2F channels. The
    classifier is a bare 1x1 convolution on the last decoder block's output (no norm or activation before it).
    Unpooling uses :func:`max_unpool2d_deterministic`, so the network runs under
    ``torch.use_deterministic_algorithms(True)``. With the defaults, 1 input channel and 28 classes it has
    3,516,971 parameters; scSE (add, r = 2) adds 4,257 per block.
    """

    # The SE positions this architecture has (of scseg.se_options.ALL_SE_POSITIONS); create_model refuses others.
    SE_POSITIONS = ALL_SE_POSITIONS

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        se_factory: SEFactory,
        num_filters: int = 64,
        depth: int = 4,
        kernel_size: int = 5,
        norm: str = "batch",
        dropout: float = 0.2,
        se_positions: Sequence[str] = DEFAULT_SE_POSITIONS,
        se_in_bottleneck: bool = False,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.depth = depth
        self.se_positions = resolve_positions(se_positions, se_in_bottleneck)

        def se_at(position: str, level: int, channels: int = num_filters) -> nn.Module:
            return se_site(se_factory, self.se_positions, position, level, channels)

        def block(cin: int, position: str, level: int, drop: float) -> QuickNATBlock:
            return QuickNATBlock(cin, num_filters, kernel_size, norm, drop, se_at(position, level))

        self.encoders = nn.ModuleList(
            [block(in_channels if i == 0 else num_filters, "encoder", i + 1, dropout) for i in range(depth)]
        )
        self.bottleneck = block(num_filters, "bottleneck", depth + 1, 0.0)
        # decoder i works at resolution level depth - i (the deepest first)
        self.decoder_inputs_se = nn.ModuleList(
            [se_at("decoder_input", depth - i, 2 * num_filters) for i in range(depth)]
        )
        self.decoders = nn.ModuleList([block(2 * num_filters, "decoder", depth - i, dropout) for i in range(depth)])
        self.skip_gates = nn.ModuleList(
            [skip_site(se_factory, self.se_positions, depth - i, num_filters, num_filters) for i in range(depth)]
        )
        self.classifier = PointwiseConv2d(num_filters, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_min_size(x, self.depth, "QuickNAT")
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
            x = decoder(self.decoder_inputs_se[i](torch.cat([skip, x], dim=1)))
        return self.classifier(x)
