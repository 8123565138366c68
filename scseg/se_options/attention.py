"""Attention modules beyond the paper's (CBAM, ECA, coordinate attention, Project & Excite, the attention gate),
declared in the registry once their implementations in :mod:`scseg.models.attention` are in place."""

from __future__ import annotations

from scseg.se_options import builtin  # noqa: F401  (the paper's modules first: registration order is table order)

__all__: list[str] = []
