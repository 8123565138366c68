"""Attention modules that studies compare squeeze-and-excitation with, as plain PyTorch modules.

Every class takes ``(channels, spatial_dims=2, **options)`` (the attention gate also takes the gating signal's
channels), works on 2D and 3D feature maps, returns a tensor of ``x``'s shape, and exposes its gates through
``maps``. Each module file has ``parameter_count``, the parameter count from the paper's formula.
"""

from __future__ import annotations

from scseg.models.attention.attention_gate import AttentionGate
from scseg.models.attention.cbam import CBAM
from scseg.models.attention.coord import CoordinateAttention
from scseg.models.attention.eca import ECA, adaptive_kernel_size
from scseg.models.attention.project_excite import ProjectExcite

__all__ = ["CBAM", "ECA", "AttentionGate", "CoordinateAttention", "ProjectExcite", "adaptive_kernel_size"]
