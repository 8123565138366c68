"""The paper's modules in the registry: ``none``, ``cse``, ``sse`` and ``scse`` (Roy et al., MICCAI 2018).

The formulas count what :mod:`scseg.models.se` builds: cSE is two linear layers with biases (C -> C/r -> C), sSE a
1x1 convolution with a bias (C -> 1), scSE both (plus, for ``concat``, a 1x1 convolution 2C -> C with a bias).
"""

from __future__ import annotations

import math

from scseg.se_options.registry import MapSpec, ModuleSpec, OptionSpec, register_module

# scSE aggregations (``se.aggregation``): add (MICCAI paper), max (authors' code, TMI paper), mul, concat.
AGGREGATIONS: tuple[str, ...] = ("add", "max", "mul", "concat")
DEFAULT_SE_REDUCTION = 2

REDUCTION = OptionSpec(
    "reduction", DEFAULT_SE_REDUCTION, int, minimum=1, help="cSE bottleneck C -> C // r (the paper: 2)"
)
GATE_SCALE = OptionSpec("gate_scale", 1.0, float, positive=True, help="a factor on every sigmoid gate (1: paper)")
AGGREGATION = OptionSpec("aggregation", "add", str, choices=AGGREGATIONS, help="how scSE recombines its two gates")

# The paper's recalibration modules: their TensorBoard gate maps keep the tags their runs have always had
# (gates/sse/<site>, gates/cse/<site>, gates/cse_bars/<site>; scseg.engine.gates.map_views).
PAPER_MODULES: tuple[str, ...] = ("cse", "sse", "scse")

CHANNEL_GATE = MapSpec("channel_gate", "channel", "(N, C, 1, ..., 1)")
SPATIAL_GATE = MapSpec("spatial_gate", "spatial", "(N, 1, *spatial)")


def _hidden(channels: int, reduction: int) -> int:
    return channels // reduction


def cse_parameters(channels: int, spatial_dims: int = 2, *, reduction: int = 2, gate_scale: float = 1.0) -> int:
    """Two linear layers with biases: ``C*h + h + h*C + C`` with ``h = C // r``."""
    h = _hidden(channels, reduction)
    return 2 * channels * h + h + channels


def sse_parameters(channels: int, spatial_dims: int = 2, *, gate_scale: float = 1.0) -> int:
    """A 1x1 convolution C -> 1 with a bias: ``C + 1``."""
    return channels + 1


def scse_parameters(
    channels: int, spatial_dims: int = 2, *, reduction: int = 2, aggregation: str = "add", gate_scale: float = 1.0
) -> int:
    """cSE + sSE, and for ``concat`` the 1x1 convolution 2C -> C with a bias."""
    fuse = 2 * channels * channels + channels if aggregation == "concat" else 0
    return cse_parameters(channels, reduction=reduction) + sse_parameters(channels) + fuse


def cse_multiply_adds(channels: int, spatial: tuple[int, ...], *, reduction: int = 2, gate_scale: float = 1.0) -> int:
    """Both linear layers (``2*C*h``) and the gating product ``x * c`` (``C*P``), P pixels."""
    return 2 * channels * _hidden(channels, reduction) + channels * math.prod(spatial)


def sse_multiply_adds(channels: int, spatial: tuple[int, ...], *, gate_scale: float = 1.0) -> int:
    """The 1x1 projection (``C*P``) and the gating product ``x * s`` (``C*P``)."""
    return 2 * channels * math.prod(spatial)


def scse_multiply_adds(
    channels: int, spatial: tuple[int, ...], *, reduction: int = 2, aggregation: str = "add", gate_scale: float = 1.0
) -> int:
    """cSE's linear layers, sSE's projection, both gating products, and ``concat``'s 1x1 fusion (``2C*C*P``)."""
    pixels = math.prod(spatial)
    fuse = 2 * channels * channels * pixels if aggregation == "concat" else 0
    return 2 * channels * _hidden(channels, reduction) + channels * pixels + 2 * channels * pixels + fuse


def _zero(*args: object, **kwargs: object) -> int:
    return 0


NONE = register_module(
    ModuleSpec("none", "none", None, parameter_count=_zero, multiply_adds=_zero, reference="no recalibration")
)
CSE = register_module(
    ModuleSpec(
        "cse",
        "cSE",
        "scseg.models.se:ChannelSE",
        options=(REDUCTION, GATE_SCALE),
        maps=(CHANNEL_GATE,),
        parameter_count=cse_parameters,
        multiply_adds=cse_multiply_adds,
        fused_kernels=True,
        reference="Hu et al., CVPR 2018 (SE); Roy et al., MICCAI 2018 (cSE)",
    )
)
SSE = register_module(
    ModuleSpec(
        "sse",
        "sSE",
        "scseg.models.se:SpatialSE",
        options=(GATE_SCALE,),
        maps=(SPATIAL_GATE,),
        parameter_count=sse_parameters,
        multiply_adds=sse_multiply_adds,
        fused_kernels=True,
        reference="Roy et al., MICCAI 2018 (sSE)",
    )
)
SCSE = register_module(
    ModuleSpec(
        "scse",
        "scSE",
        "scseg.models.se:ConcurrentSE",
        options=(REDUCTION, AGGREGATION, GATE_SCALE),
        maps=(CHANNEL_GATE, SPATIAL_GATE),
        parameter_count=scse_parameters,
        multiply_adds=scse_multiply_adds,
        run_name_option="aggregation",
        fused_kernels=True,
        reference="Roy et al., MICCAI 2018 (add); IEEE TMI 2019 and the authors' code (max)",
    )
)

__all__ = ["AGGREGATIONS", "DEFAULT_SE_REDUCTION", "PAPER_MODULES"]
