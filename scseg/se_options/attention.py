"""Attention modules beyond the paper's in the registry: CBAM, ECA, coordinate attention, Project & Excite and the
additive attention gate (implementations in :mod:`scseg.models.attention`, parameter and multiply-add formulas in
their files).

Their options keep the constructors' names (``se.spatial_kernel``, ``se.gamma``...); ``reduction`` shares the
``se.reduction`` key with cSE and scSE, each module with its paper's default in its config (configs/se/<name>.yaml).

The attention gate (Oktay et al. 2018) takes two inputs, the skip tensor and the gating signal from the coarser
level, and sits on the skip connections (placement ``skip``, position ``skip``): every architecture gates each skip
with the decoder's coarser map before the concatenation (``scseg.models.blocks.skip_site``).
"""

from __future__ import annotations

from scseg.se_options import builtin  # noqa: F401  (the paper's modules first: registration order is table order)
from scseg.se_options.builtin import CHANNEL_GATE, SPATIAL_GATE
from scseg.se_options.registry import MapSpec, ModuleSpec, OptionSpec, register_module

_PACKAGE = "scseg.models.attention"

CBAM = register_module(
    ModuleSpec(
        "cbam",
        "CBAM",
        f"{_PACKAGE}.cbam:CBAM",
        options=(
            OptionSpec("reduction", 16, int, minimum=1, help="shared MLP C -> C // r -> C"),
            OptionSpec("spatial_kernel", 7, int, odd=True, help="the spatial gate's k x k convolution"),
        ),
        maps=(CHANNEL_GATE, SPATIAL_GATE),
        parameter_count=f"{_PACKAGE}.cbam:parameter_count",
        multiply_adds=f"{_PACKAGE}.cbam:multiply_adds",
        reference="Woo et al., ECCV 2018 (CBAM)",
    )
)
ECA = register_module(
    ModuleSpec(
        "eca",
        "ECA",
        f"{_PACKAGE}.eca:ECA",
        options=(
            OptionSpec("gamma", 2.0, float, positive=True, help="k = |log2(C)/gamma + b/gamma|_odd"),
            OptionSpec("b", 1.0, float, help="k = |log2(C)/gamma + b/gamma|_odd"),
            OptionSpec("kernel_size", None, int, odd=True, nullable=True, help="null: k from the channel count"),
        ),
        maps=(CHANNEL_GATE,),
        parameter_count=f"{_PACKAGE}.eca:parameter_count",
        multiply_adds=f"{_PACKAGE}.eca:multiply_adds",
        reference="Wang et al., CVPR 2020 (ECA-Net)",
    )
)
COORD = register_module(
    ModuleSpec(
        "coord",
        "CoordAtt",
        f"{_PACKAGE}.coord:CoordinateAttention",
        options=(
            OptionSpec("reduction", 32, int, minimum=1, help="hidden channels max(min_channels, C // r)"),
            OptionSpec("min_channels", 8, int, minimum=1, help="hidden channels max(min_channels, C // r)"),
        ),
        maps=(
            MapSpec("attention_h", "other", "(N, C, H, 1)", factor_of="attention"),
            MapSpec("attention_w", "other", "(N, C, 1, W)", factor_of="attention"),
            MapSpec("attention_d", "other", "(N, C, D, 1, 1), 3D only", factor_of="attention"),
        ),
        parameter_count=f"{_PACKAGE}.coord:parameter_count",
        multiply_adds=f"{_PACKAGE}.coord:multiply_adds",
        reference="Hou et al., CVPR 2021 (coordinate attention)",
    )
)
PROJECT_EXCITE = register_module(
    ModuleSpec(
        "project_excite",
        "P&E",
        f"{_PACKAGE}.project_excite:ProjectExcite",
        options=(OptionSpec("reduction", 2, int, minimum=1, help="excitation C -> C // r -> C"),),
        maps=(MapSpec("attention", "other", "(N, C, *spatial)"),),
        parameter_count=f"{_PACKAGE}.project_excite:parameter_count",
        multiply_adds=f"{_PACKAGE}.project_excite:multiply_adds",
        reference="Rickmann et al., MICCAI 2019 (Project & Excite)",
    )
)
ATTENTION_GATE = register_module(
    ModuleSpec(
        "attention_gate",
        "AG",
        f"{_PACKAGE}.attention_gate:AttentionGate",
        options=(OptionSpec("inter_channels", None, int, minimum=1, nullable=True, help="null: channels // 2"),),
        maps=(MapSpec("attention", "spatial", "(N, 1, *spatial), from x and the gating signal g"),),
        parameter_count=f"{_PACKAGE}.attention_gate:parameter_count",  # with gating_channels
        multiply_adds=f"{_PACKAGE}.attention_gate:multiply_adds",
        placement="skip",
        reference="Oktay et al., MIDL 2018 (Attention U-Net)",
    )
)

__all__ = ["ATTENTION_GATE", "CBAM", "COORD", "ECA", "PROJECT_EXCITE"]
