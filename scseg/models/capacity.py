"""Capacity-matched backbones: a network without SE widened until it has as many parameters as an SE network.

Why: an SE variant adds parameters (cSE's C^2/r weights per block: +1.5 % on U-Net, +17 % on the small FC-DenseNet
at r = 2). In an under-fitted network capacity alone can move Dice, so "SE helps" needs the control "the same
parameters without SE" (``model.capacity_match``). The widths searched are each architecture's own width knobs
(:data:`WIDTH_KNOBS`); parameters are counted on the meta device, so the search allocates no weights.

Granularity: U-Net and SD-Net have one knob (``filters``), and one filter more is ~6 % more parameters at 32
filters, so they land within ~3 % of a target; FC-DenseNet's two knobs (``first_filters``, ``growth_rate``) land
within 1-2 %. The run records the ratio it reached (summary.json ``capacity_ratio``). When SE adds less than half a
width step (cSE or scSE at r = 2 on U-Net and SD-Net: 1.5-2 %), the nearest match is the plain network itself:
``create_model`` warns, since such a run repeats ``se=none`` and its control measures nothing (capacity cannot
explain an effect of a module that small there).
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

# The keyword arguments that widen each architecture, searched from the configured value up to MAX_WIDENING x it.
WIDTH_KNOBS: dict[str, tuple[str, ...]] = {
    "unet": ("filters",),
    "sdnet": ("filters",),
    "fcdensenet": ("first_filters", "growth_rate"),
    "fcdensenet56": ("first_filters", "growth_rate"),
    "fcdensenet67": ("first_filters", "growth_rate"),
    "fcdensenet103": ("first_filters", "growth_rate"),
    "quicknat": ("num_filters",),
}
MAX_WIDENING = 2.0


def count_on_meta(build: Callable[..., nn.Module], **kwargs: Any) -> int:
    """Trainable parameters of ``build(**kwargs)`` without allocating them."""
    with torch.device("meta"):
        model = build(**kwargs)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def capacity_matched(
    arch: str, arch_kwargs: Mapping[str, Any], target_params: int, count: Callable[[dict], int]
) -> tuple[dict, int]:
    """``(widened arch_kwargs, their parameter count)`` closest to ``target_params`` (ties: the narrower).

    ``count(kwargs)`` returns the parameter count of the architecture built without SE from ``kwargs``. Only the
    knobs of :data:`WIDTH_KNOBS` change, each between its configured value (else the architecture's default) and
    ``MAX_WIDENING`` times it; the count grows with the last knob, so each scan stops once past the target.
    """
    if arch not in WIDTH_KNOBS:
        raise ValueError(f"model.capacity_match: no width knobs known for architecture {arch!r}")
    from scseg.models import ARCHITECTURES  # the registry imports this module

    params = inspect.signature(ARCHITECTURES[arch]).parameters
    knobs = WIDTH_KNOBS[arch]
    base = {k: int(arch_kwargs.get(k, params[k].default)) for k in knobs}
    ranges = [range(base[k], int(base[k] * MAX_WIDENING) + 1) for k in knobs]
    best: tuple[float, int, dict] | None = None
    for outer in itertools.product(*ranges[:-1]):
        for last in ranges[-1]:
            kwargs = {**arch_kwargs, **dict(zip(knobs, (*outer, last)))}
            n = count(kwargs)
            score = abs(n - target_params) / target_params
            if best is None or score < best[0] - 1e-12:
                best = (score, n, kwargs)
            if n > target_params:
                break
    assert best is not None
    return best[2], best[1]


def capacity_of(model: nn.Module) -> dict | None:
    """The ``capacity`` record ``create_model`` put on a capacity-matched network (also through a DDP or
    ``torch.compile`` wrapper), else None."""
    return next((m.capacity for m in model.modules() if isinstance(getattr(m, "capacity", None), dict)), None)


__all__ = ["MAX_WIDENING", "WIDTH_KNOBS", "capacity_matched", "capacity_of", "count_on_meta"]
