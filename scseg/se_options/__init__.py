"""The SE vocabulary and rules: the variant and aggregation names, where SE blocks go (``se.positions``) and how
narrow their cSE bottleneck is (``se.reduction``).

One place, free of torch, because several readers must agree on them: the networks (which blocks get SE), the
config check (valid names), the run identity (equal networks hash equally), ``scseg-compare`` (which reads a
finished run's settings back) and ``scseg-gates``.

- ``se.positions``: any subset of ``encoder``, ``bottleneck``, ``decoder`` (default ``[encoder, decoder]``, the
  paper's placement). The older ``se.in_bottleneck: true`` is an alias that adds ``bottleneck``.
- ``se.reduction``: the cSE bottleneck ``C -> C / r``. ``null`` takes the architecture's own default,
  ``model.se_reduction`` (FC-DenseNet's wide blocks), else :data:`DEFAULT_SE_REDUCTION`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

# The SE variants (``se.name``) and scSE aggregations (``se.aggregation``) scseg builds.
SE_VARIANTS: tuple[str, ...] = ("none", "cse", "sse", "scse")
AGGREGATIONS: tuple[str, ...] = ("add", "max", "mul", "concat")
SE_POSITIONS: tuple[str, ...] = ("encoder", "bottleneck", "decoder")
DEFAULT_SE_POSITIONS: tuple[str, ...] = ("encoder", "decoder")
DEFAULT_SE_REDUCTION = 2
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
    unknown = sorted(chosen - set(SE_POSITIONS))
    if unknown:
        raise ValueError(
            f"unknown SE position(s) {', '.join(map(repr, unknown))}; "
            f"se.positions is any subset of {', '.join(SE_POSITIONS)}"
        )
    if in_bottleneck:
        chosen.add("bottleneck")
    return tuple(p for p in SE_POSITIONS if p in chosen)


def resolve_reduction(reduction: int | None, arch_default: int | None = None) -> int:
    """The cSE reduction a network is built with: ``se.reduction``, else the architecture's, else the paper's 2."""
    for value in (reduction, arch_default):
        if value is not None:
            if isinstance(value, bool) or int(value) != value or int(value) < 1:
                raise ValueError(f"an SE reduction must be a positive integer, got {value!r}")
            return int(value)
    return DEFAULT_SE_REDUCTION


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
    "DEFAULT_SE_POSITIONS",
    "DEFAULT_SE_REDUCTION",
    "SE_POSITIONS",
    "SE_VARIANTS",
    "positions_label",
    "resolve_positions",
    "resolve_reduction",
    "se_settings",
]
