"""FC-DenseNet ("The One Hundred Layers Tiramisu", Jegou et al. 2017) with SE after every dense block."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import nn

from scseg.models.blocks import (
    PointwiseConv2d,
    SEFactory,
    check_min_size,
    make_norm,
    match_size,
    se_site,
    skip_site,
)
from scseg.se_options import ALL_SE_POSITIONS, DEFAULT_SE_POSITIONS, resolve_positions


class DenseLayer(nn.Sequential):
    """BN -> ReLU -> 3x3 conv producing ``growth_rate`` maps -> dropout."""

    def __init__(self, in_channels: int, growth_rate: int, norm: str, dropout: float) -> None:
        super().__init__(
            make_norm(norm, in_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, growth_rate, kernel_size=3, padding=1),
            nn.Dropout2d(dropout) if dropout > 0 else nn.Identity(),
        )


class DenseBlock(nn.Module):
    """``n_layers`` dense layers, each seeing the concatenation of the input and all earlier new maps.

    Returns either the full concatenation (input + new maps; the down path) or only the new maps (the
    bottleneck and up path, which keeps the number of upsampled maps from exploding).
    """

    def __init__(
        self, in_channels: int, n_layers: int, growth_rate: int, norm: str, dropout: float, new_only: bool
    ) -> None:
        super().__init__()
        self.new_only = new_only
        self.layers = nn.ModuleList(
            [DenseLayer(in_channels + i * growth_rate, growth_rate, norm, dropout) for i in range(n_layers)]
        )
        self.out_channels = n_layers * growth_rate + (0 if new_only else in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        new = []
        for layer in self.layers:
            out = layer(x)
            x = torch.cat([x, out], dim=1)
            new.append(out)
        return torch.cat(new, dim=1) if self.new_only else x


class TransitionDown(nn.Sequential):
    """BN -> ReLU -> 1x1 conv -> dropout -> 2x2 max-pool."""

    def __init__(self, channels: int, norm: str, dropout: float) -> None:
        super().__init__(
            make_norm(norm, channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, kernel_size=1),
            nn.Dropout2d(dropout) if dropout > 0 else nn.Identity(),
            nn.MaxPool2d(2),
        )


class FCDenseNet(nn.Module):
    """FC-DenseNet.

    Args:
        in_channels: input channels (modalities x 2.5D context slices).
        num_classes: output classes including background; the model returns logits.
        first_filters: maps of the first 3x3 convolution (48 in the paper).
        down_layers: dense layers per down-path block; its length is the number of poolings.
        bottleneck_layers: dense layers of the bottleneck block.
        up_layers: dense layers per up-path block (same length as ``down_layers``).
        growth_rate: maps each dense layer adds (k).
        dropout: dropout after every dense layer and transition down (0.2 in the paper).
        norm: ``batch`` (paper), ``instance``, ``group`` or ``none``.
        se_factory: builds a new SE module for a channel count; one per block at ``se_positions``.
        se_positions: which blocks get SE: any of ``encoder`` (down path), ``bottleneck``, ``decoder_input`` (the
            upsampled map concatenated with its skip, before an up block), ``decoder`` (up path); the others keep an
            identity. ``skip`` (a skip module such as the attention gate, alone): every skip (a down block's full
            output) is gated before the concatenation, with the up path's map before the transition up (the
            bottleneck's or the previous up block's new maps) as gating signal.
        se_in_bottleneck: alias that adds ``bottleneck`` to ``se_positions`` (older configs).

    SE placement: after each down block's full output (the tensor that feeds the skip and the transition
    down) and after each up block's output (its new maps, the tensor upsampled next; for the last block the
    full concatenation that feeds the classifier).

    Parameter counts with 3 input channels and 11 classes, biases on every convolution as in the public
    reference implementation: 56 -> 1,376,795, 67 -> 3,463,243, 103 -> 9,322,091. Jegou et al. quote 1.5 / 3.5 /
    9.4 M; their counts also include BatchNorm running statistics, which are buffers, not trainable parameters.
    """

    # The SE positions this architecture has (of scseg.se_options.ALL_SE_POSITIONS); create_model refuses others.
    SE_POSITIONS = ALL_SE_POSITIONS

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        se_factory: SEFactory,
        first_filters: int = 24,
        down_layers: Sequence[int] = (3, 3, 3, 3),
        bottleneck_layers: int = 3,
        up_layers: Sequence[int] = (3, 3, 3, 3),
        growth_rate: int = 8,
        dropout: float = 0.2,
        norm: str = "batch",
        se_positions: Sequence[str] = DEFAULT_SE_POSITIONS,
        se_in_bottleneck: bool = False,
    ) -> None:
        super().__init__()
        down_layers, up_layers = list(down_layers), list(up_layers)
        if len(down_layers) != len(up_layers) or not down_layers:
            raise ValueError(
                f"down_layers and up_layers must be non-empty and of equal length, got {down_layers} and {up_layers}"
            )
        self.n_pools = len(down_layers)
        self.se_positions = resolve_positions(se_positions, se_in_bottleneck)

        def se_at(position: str, channels: int, level: int) -> nn.Module:
            return se_site(se_factory, self.se_positions, position, level, channels)

        self.first_conv = nn.Conv2d(in_channels, first_filters, kernel_size=3, padding=1)

        channels = first_filters
        skip_channels = []
        self.down_blocks, self.down_se, self.transitions_down = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for i, n in enumerate(down_layers):
            block = DenseBlock(channels, n, growth_rate, norm, dropout, new_only=False)
            channels = block.out_channels
            self.down_blocks.append(block)
            self.down_se.append(se_at("encoder", channels, i + 1))
            skip_channels.append(channels)
            self.transitions_down.append(TransitionDown(channels, norm, dropout))

        self.bottleneck = DenseBlock(channels, bottleneck_layers, growth_rate, norm, dropout, new_only=True)
        upsampled = self.bottleneck.out_channels
        self.bottleneck_se = se_at("bottleneck", upsampled, self.n_pools + 1)

        self.transitions_up, self.up_blocks, self.up_se = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        self.up_input_se = nn.ModuleList()
        self.skip_gates = nn.ModuleList()
        for i, n in enumerate(up_layers):
            last = i == len(up_layers) - 1
            level = self.n_pools - i  # up block i works at the resolution of down block n_pools - i
            self.transitions_up.append(nn.ConvTranspose2d(upsampled, upsampled, kernel_size=3, stride=2))
            block = DenseBlock(upsampled + skip_channels[-1 - i], n, growth_rate, norm, dropout, new_only=not last)
            self.up_blocks.append(block)
            self.up_input_se.append(se_at("decoder_input", upsampled + skip_channels[-1 - i], level))
            self.up_se.append(se_at("decoder", block.out_channels, level))
            self.skip_gates.append(skip_site(se_factory, self.se_positions, level, skip_channels[-1 - i], upsampled))
            upsampled = block.out_channels
        self.classifier = PointwiseConv2d(upsampled, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_min_size(x, self.n_pools, "FC-DenseNet")
        x = self.first_conv(x)
        skips = []
        for block, se, down in zip(self.down_blocks, self.down_se, self.transitions_down):
            x = se(block(x))
            skips.append(x)
            x = down(x)
        x = self.bottleneck_se(self.bottleneck(x))
        for i, (up, block, se_in, se) in enumerate(
            zip(self.transitions_up, self.up_blocks, self.up_input_se, self.up_se)
        ):
            skip = self.skip_gates[i](skips[-1 - i], x)
            x = match_size(up(x), skip.shape[-2:])
            x = se(block(se_in(torch.cat([x, skip], dim=1))))
        return self.classifier(x)


# ---- the standard presets of Jegou et al. ----------------------------------------------------------------------
# Registered architectures of their own (``model.arch: fcdensenet56`` ...): each fixes the layers per dense block
# (down path, bottleneck, up path), the growth rate and the first convolution's width as its defaults. They are
# ``functools.partial`` objects of FCDenseNet, so their signature (what the config check reads) is FCDenseNet's with
# these defaults, and any keyword can still be overridden like any other.


def _preset(doc: str, **defaults: object) -> functools.partial[FCDenseNet]:
    preset = functools.partial(FCDenseNet, first_filters=48, dropout=0.2, **defaults)
    preset.__doc__ = doc
    return preset


fcdensenet56 = _preset(
    "FC-DenseNet56: 4 layers per block, k = 12 (1,376,795 parameters for 3 inputs and 11 classes).",
    down_layers=(4, 4, 4, 4, 4),
    bottleneck_layers=4,
    up_layers=(4, 4, 4, 4, 4),
    growth_rate=12,
)
fcdensenet67 = _preset(
    "FC-DenseNet67: 5 layers per block, k = 16 (3,463,243 parameters for 3 inputs and 11 classes).",
    down_layers=(5, 5, 5, 5, 5),
    bottleneck_layers=5,
    up_layers=(5, 5, 5, 5, 5),
    growth_rate=16,
)
fcdensenet103 = _preset(
    "FC-DenseNet103: 4-5-7-10-12 layers down, 15 in the bottleneck, k = 16 (9,322,091 parameters for 3 inputs "
    "and 11 classes).",
    down_layers=(4, 5, 7, 10, 12),
    bottleneck_layers=15,
    up_layers=(12, 10, 7, 5, 4),
    growth_rate=16,
)

__all__ = ["FCDenseNet", "fcdensenet56", "fcdensenet67", "fcdensenet103"]
