"""The SE vocabulary and rules: the variant and aggregation names, where SE blocks go (``se.positions``) and how
narrow their cSE bottleneck is (``se.reduction``).

One place, free of torch, because several readers must agree on them: the networks (which blocks get SE), the
config check (valid names), the run identity (equal networks hash equally), ``scseg-compare`` (which reads a
finished run's settings back) and ``scseg-gates``.

- ``se.positions``: any subset of ``encoder``, ``bottleneck``, ``decoder_input``, ``decoder`` (default
  ``[encoder, decoder]``, the paper's placement). ``decoder_input`` is the concatenation of the upsampled map and
  the skip that enters a decoder block (where segmentation_models.pytorch puts its first attention), in the
  architectures that concatenate. The older ``se.in_bottleneck: true`` is an alias that adds ``bottleneck``.
  A module placed on skip connections (the attention gate) has one position, ``skip``: every skip connection, gated
  before it joins the decoder's concatenation (sites ``skipN``, N the resolution level); ``skip`` and the block
  positions exclude each other (:func:`check_module_positions`).
- ``se.reduction``: the cSE bottleneck ``C -> C / r``. ``null`` takes the architecture's own default,
  ``model.se_reduction`` (FC-DenseNet's wide blocks), else :data:`DEFAULT_SE_REDUCTION`.

The modules themselves (names, options, maps, formulas) are declared in the registry (:mod:`.registry`; the paper's
four in :mod:`.builtin`); :data:`SE_VARIANTS` and :data:`AGGREGATIONS` are derived from it for older callers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from scseg.se_options import attention as _attention  # noqa: F401  (registers the attention modules)
from scseg.se_options.builtin import AGGREGATIONS, DEFAULT_SE_REDUCTION
from scseg.se_options.registry import (
    MAP_KINDS,
    PLACEMENTS,
    MapSpec,
    ModuleSpec,
    OptionSpec,
    find_module,
    module_label,
    module_names,
    module_spec,
    module_specs,
    register_module,
    run_name_option,
    unregister_module,
    uses_option,
)

# The module names (``se.name``) registered when scseg is imported; read module_names() for the live list (a test
# or a plug-in may register more).
SE_VARIANTS: tuple[str, ...] = module_names()
# Where block modules go: SE_POSITIONS are the block outputs every architecture has (the paper's sites and the
# bottleneck); ALL_SE_POSITIONS adds those only some have, in network order, and ``skip`` (skip modules only). Each
# architecture declares its own (``SE_POSITIONS`` on its class; one without the declaration has SE_POSITIONS).
SE_POSITIONS: tuple[str, ...] = ("encoder", "bottleneck", "decoder")
ALL_SE_POSITIONS: tuple[str, ...] = ("encoder", "bottleneck", "decoder_input", "decoder", "skip")
DEFAULT_SE_POSITIONS: tuple[str, ...] = ("encoder", "decoder")
# The one position of modules placed on skip connections (placement ``skip``): every skip the architecture has.
SKIP_POSITIONS: tuple[str, ...] = ("skip",)
# A site's name (gate maps, ``scseg-gates``, TensorBoard tags): its position's prefix and its resolution level
# (1 = full resolution; decoders count from the deepest level up, so ``dec1`` works at ``enc1``'s resolution).
_SITE_PREFIX = {
    "encoder": "enc{}",
    "bottleneck": "bottleneck",
    "decoder_input": "dec{}_in",
    "decoder": "dec{}",
    "skip": "skip{}",
}
# How SE blocks compute (``trainer.se_kernels``; scseg.models.se_fused): fused CPU kernels when they build, always,
# or never (ATen operations).
SE_KERNEL_MODES: tuple[str, ...] = ("auto", "fused", "eager")


def resolve_positions(positions: Iterable[str] | str | None, in_bottleneck: bool = False) -> tuple[str, ...]:
    """Canonical positions in network order, without duplicates; ``in_bottleneck`` (the alias) adds ``bottleneck``.

    ``None`` means the default; a single string is one position. Unknown names raise ``ValueError``.
    """
    if positions is None:
        positions = DEFAULT_SE_POSITIONS
    elif isinstance(positions, str):
        positions = [positions]
    chosen = {str(p) for p in positions}
    unknown = sorted(chosen - set(ALL_SE_POSITIONS))
    if unknown:
        raise ValueError(
            f"unknown SE position(s) {', '.join(map(repr, unknown))}; "
            f"se.positions is any subset of {', '.join(ALL_SE_POSITIONS)}"
        )
    if in_bottleneck:
        chosen.add("bottleneck")
    return tuple(p for p in ALL_SE_POSITIONS if p in chosen)


def default_positions(name: str) -> tuple[str, ...]:
    """Where module ``name`` goes when ``se.positions`` is not given: ``skip`` for a skip module, else the paper's
    encoder and decoder."""
    spec = find_module(name)
    return SKIP_POSITIONS if spec is not None and spec.placement == "skip" else DEFAULT_SE_POSITIONS


def check_module_positions(name: str, positions: Iterable[str]) -> None:
    """``ValueError`` naming ``se.positions`` when they do not fit module ``name``'s placement: a skip module takes
    exactly ``[skip]``, a block module any block positions but not ``skip``. ``none`` takes anything."""
    spec = module_spec(name)
    chosen = tuple(positions)
    if spec.builder is None:
        return
    if spec.placement == "skip" and chosen != SKIP_POSITIONS:
        raise ValueError(
            f"se.positions is [{', '.join(chosen)}], but SE module {name!r} sits on skip connections: its only "
            f"position is [{', '.join(SKIP_POSITIONS)}] (every skip connection)"
        )
    if spec.placement == "block" and set(chosen) & set(SKIP_POSITIONS):
        raise ValueError(
            f"se.positions holds 'skip', the position of modules on skip connections "
            f"({', '.join(module_names(placement='skip')) or 'none registered'}); SE module {name!r} sits after "
            f"blocks: choose among {', '.join(p for p in ALL_SE_POSITIONS if p not in SKIP_POSITIONS)}"
        )


def resolve_reduction(reduction: int | None, arch_default: int | None = None) -> int:
    """The cSE reduction a network is built with: ``se.reduction``, else the architecture's, else the paper's 2."""
    for value in (reduction, arch_default):
        if value is not None:
            if isinstance(value, bool) or int(value) != value or int(value) < 1:
                raise ValueError(f"an SE reduction must be a positive integer, got {value!r}")
            return int(value)
    return DEFAULT_SE_REDUCTION


def site_name(position: str, level: int) -> str:
    """The name of the SE site at ``position`` and resolution ``level``: ``enc1``, ``bottleneck``, ``dec2_in``..."""
    if position not in _SITE_PREFIX:
        raise ValueError(f"unknown SE position {position!r}; valid positions: {', '.join(ALL_SE_POSITIONS)}")
    return _SITE_PREFIX[position].format(level)


def positions_label(positions: Iterable[str]) -> str:
    """``encoder+decoder``-style text for tables, hparams and file names (``-`` for no position)."""
    return "+".join(positions) or "-"


def se_settings(cfg: Mapping[str, Any] | Any) -> dict[str, Any]:
    """``{"se_reduction": int, "se_positions": [..], "se_gate_scale": float}`` a run's network was built with, from
    its (resolved) config.

    Accepts a plain mapping (``.hydra/config.yaml`` loaded) or a DictConfig; keys a run folder written before
    ``se.positions`` / ``model.se_reduction`` existed take their defaults, so old runs read back correctly.
    """
    se = cfg.get("se") or {}
    model = cfg.get("model") or {}
    return {
        "se_reduction": resolve_reduction(se.get("reduction"), model.get("se_reduction")),
        "se_positions": list(resolve_positions(se.get("positions"), bool(se.get("in_bottleneck", False)))),
        "se_gate_scale": float(se.get("gate_scale", 1.0)),
    }


__all__ = [
    "AGGREGATIONS",
    "ALL_SE_POSITIONS",
    "DEFAULT_SE_POSITIONS",
    "DEFAULT_SE_REDUCTION",
    "MAP_KINDS",
    "PLACEMENTS",
    "SE_KERNEL_MODES",
    "SE_POSITIONS",
    "SE_VARIANTS",
    "SKIP_POSITIONS",
    "MapSpec",
    "ModuleSpec",
    "OptionSpec",
    "check_module_positions",
    "default_positions",
    "find_module",
    "module_label",
    "module_names",
    "module_spec",
    "module_specs",
    "positions_label",
    "register_module",
    "resolve_positions",
    "resolve_reduction",
    "run_name_option",
    "se_settings",
    "site_name",
    "unregister_module",
    "uses_option",
]
