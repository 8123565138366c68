"""Networks and SE blocks. ``create_model`` is the registry every config and command goes through."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import nn

from scseg.models.capacity import WIDTH_KNOBS, capacity_matched, count_on_meta
from scseg.models.fcdensenet import FCDenseNet, fcdensenet56, fcdensenet67, fcdensenet103
from scseg.models.quicknat import QuickNAT
from scseg.models.sdnet import SDNet
from scseg.models.se import check_se_options, create_se, se_build_scope
from scseg.models.se_fused import resolve_mode
from scseg.models.unet import UNet
from scseg.se_options import (
    AGGREGATIONS,
    SE_KERNEL_MODES,
    SE_POSITIONS,
    SE_VARIANTS,
    SKIP_POSITIONS,
    check_module_positions,
    default_positions,
    module_names,
    resolve_positions,
)

# Every entry is a class or a function whose own signature lists the architecture's keyword arguments (the config
# check validates ``model.*`` against it) besides in_channels, num_classes and the SE arguments create_model adds.
ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "unet": UNet,
    "sdnet": SDNet,
    "fcdensenet": FCDenseNet,
    "fcdensenet56": fcdensenet56,
    "fcdensenet67": fcdensenet67,
    "fcdensenet103": fcdensenet103,
    "quicknat": QuickNAT,
}


def create_model(
    arch: str,
    num_classes: int,
    in_channels: int = 1,
    se: str = "none",
    se_reduction: int | None = None,
    se_aggregation: str = "add",
    se_in_bottleneck: bool = False,
    se_positions: Sequence[str] | None = None,
    se_kernels: str = "eager",
    se_gate_scale: float = 1.0,
    capacity_match: str | None = None,
    se_options: Mapping[str, Any] | None = None,
    **arch_kwargs,
) -> nn.Module:
    """Build a 2D segmentation network that returns logits ``(N, num_classes, H, W)``.

    ``arch`` is a key of :data:`ARCHITECTURES`; ``arch_kwargs`` are that architecture's own keyword arguments
    (see its docstring). Presets (``fcdensenet56/67/103``) fix layer counts and growth rate; explicit
    ``arch_kwargs`` override them. Every SE-equipped block gets its own ``create_se`` instance; ``se_positions``
    (any of ``encoder``, ``bottleneck``, ``decoder_input``, ``decoder``; ``se_in_bottleneck`` adds ``bottleneck``)
    says which blocks; ``None``: the module's default (encoder and decoder; ``[skip]``, every skip connection, for a
    skip module such as ``attention_gate``, which takes no other position).
    ``se_kernels`` (``eager`` | ``fused`` | ``auto``) chooses how the SE blocks compute, not what (see ``create_se``);
    ``se_gate_scale`` multiplies every SE gate (``se.gate_scale``). ``se`` is any registered module
    (:func:`scseg.se_options.module_names`); ``se_reduction`` (None: the module's default) and ``se_options`` (the
    module's own options, e.g. a kernel size) reach it through ``create_se``. ``se_positions`` must be positions the
    architecture declares (:func:`architecture_positions`). ``capacity_match`` (a registered module, with
    ``se="none"``) widens the backbone to that module's parameter count (:mod:`scseg.models.capacity`); the model
    then carries ``capacity`` = ``{"variant", "target_params", "params", "ratio", "widened"}``. A skip module as
    ``capacity_match`` counts its gates on every skip, whatever ``se_positions`` says (they are those of ``none``).
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; registered: {', '.join(ARCHITECTURES)}")
    # Validate the SE settings once, up front, so the error names the setting rather than a block.
    check_se_options(se, se_aggregation)
    if se_kernels not in SE_KERNEL_MODES:
        raise ValueError(f"unknown se_kernels {se_kernels!r}; valid choices: {', '.join(SE_KERNEL_MODES)}")
    placed = capacity_match if se == "none" and capacity_match is not None else se
    if se == "none" and capacity_match in module_names(placement="skip"):
        se_positions, se_in_bottleneck = SKIP_POSITIONS, False  # a skip module has one position: every skip
    elif se_positions is None:
        se_positions = default_positions(placed)
    se_positions = resolve_positions(se_positions, se_in_bottleneck)
    se_in_bottleneck = False  # now part of se_positions
    check_module_positions(placed, se_positions)
    unsupported = sorted(set(se_positions) - set(architecture_positions(arch)))
    if (se != "none" or capacity_match is not None) and unsupported:
        raise ValueError(
            f"se.positions holds {', '.join(map(repr, unsupported))}, which architecture {arch!r} does not have; "
            f"its positions: {', '.join(architecture_positions(arch))}"
        )
    if se != "none":
        se_kernels = resolve_mode(se_kernels)  # once, so "auto" builds (or gives up) before the first block
    se_factory = functools.partial(
        create_se,
        se,
        spatial_dims=2,
        reduction=se_reduction,
        aggregation=se_aggregation,
        kernels=se_kernels,
        gate_scale=se_gate_scale,
        options=se_options,
    )

    def build(factory: Callable[[int], nn.Module], kwargs: dict) -> nn.Module:
        # SE blocks draw nothing from the global RNG (see create_se): every variant gets the same backbone weights.
        with se_build_scope():
            return ARCHITECTURES[arch](
                in_channels=in_channels,
                num_classes=num_classes,
                se_factory=factory,
                se_in_bottleneck=se_in_bottleneck,
                se_positions=se_positions,
                **kwargs,
            )

    if capacity_match is None:
        return build(se_factory, arch_kwargs)
    matchable = capacity_modules()
    if se != "none" or capacity_match not in matchable:
        raise ValueError(
            f"model.capacity_match={capacity_match!r} widens a network without SE (se=none) to an SE module's "
            f"parameter count; valid values: {', '.join(matchable)} (se is {se!r})"
        )
    matched_factory = functools.partial(
        create_se,
        capacity_match,
        spatial_dims=2,
        reduction=se_reduction,
        aggregation=se_aggregation,
        gate_scale=se_gate_scale,
        options=se_options,
    )
    target = count_on_meta(build, factory=matched_factory, kwargs=arch_kwargs)
    widened, params = capacity_matched(
        arch, arch_kwargs, target, lambda kwargs: count_on_meta(build, factory=se_factory, kwargs=kwargs)
    )
    model = build(se_factory, widened)
    changed = {k: widened[k] for k in WIDTH_KNOBS[arch]}
    if params == count_on_meta(build, factory=se_factory, kwargs=arch_kwargs):
        warnings.warn(
            f"model.capacity_match={capacity_match}: {capacity_match} adds {target - params:,} parameters to {arch} "
            f"({100 * (target / params - 1):.1f} %), and no wider {'/'.join(WIDTH_KNOBS[arch])} is nearer "
            f"{target:,} than the plain network's {params:,}: this run is the plain network (se=none) again, and "
            "its control measures nothing. Capacity cannot explain an effect this small at this width.",
            stacklevel=2,
        )
    model.capacity = {  # type: ignore[assignment]
        "variant": capacity_match,
        "target_params": target,
        "params": params,
        "ratio": round(params / target, 4),
        "widened": changed,
    }
    return model


def architecture_positions(arch: str) -> tuple[str, ...]:
    """The SE positions architecture ``arch`` declares (``SE_POSITIONS`` on its class, also through a preset's
    ``functools.partial``); :data:`scseg.se_options.SE_POSITIONS` (the block outputs) for one that declares none."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; registered: {', '.join(ARCHITECTURES)}")
    builder = ARCHITECTURES[arch]
    while isinstance(builder, functools.partial):
        builder = builder.func
    return tuple(getattr(builder, "SE_POSITIONS", SE_POSITIONS))


def capacity_modules() -> tuple[str, ...]:
    """What ``model.capacity_match`` accepts: every registered module except ``none`` (a skip module counted on
    every skip connection)."""
    return tuple(n for n in module_names() if n != "none")


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters (BatchNorm running statistics are buffers and do not count)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = [
    "AGGREGATIONS",
    "ARCHITECTURES",
    "SE_VARIANTS",
    "architecture_positions",
    "capacity_modules",
    "check_se_options",
    "count_parameters",
    "create_model",
    "create_se",
    "se_build_scope",
]
