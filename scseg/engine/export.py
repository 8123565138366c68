"""A trained run as an ONNX model, with the input convention written beside it (``scseg-export``).

    run folder -> network (eval mode, eager SE gates, NCHW) -> ONNX graph of standard operators only
               -> ``<model>.onnx.json`` (canvas, padding, intensity scaling, z-score, channels, slice axis, classes)
               -> check: onnxruntime against PyTorch on random inputs of two sizes (max |difference| <= 1e-4)

Exporter: the TorchScript-based one (``torch.onnx.export(..., dynamo=False)``), chosen deliberately although torch
2.9+ defaults to ``dynamo=True`` and warns that this one is deprecated. The torch.export-based exporter cannot
translate SD-Net's deterministic unpooling (``aten.remainder`` with a symbolic divisor: an error in torch 2.13),
takes about ten times longer per network (a tiny scSE U-Net: 13 s against 1.4 s) and needs ``onnxscript``; both
translate Python's ``//`` on sizes the same (wrong) way, see below. The TorchScript tracer runs the eager forward
once and inlines autograd Functions as the standard ATen operations they run (the sSE projection, the spatial mean,
the 1x1 classifier); the SE blocks' aggregation, which writes in place through ``out=``, is swapped for plain
operations (:func:`plain_se_forward`). Its other weakness, Python branches on sizes frozen at the traced size, is
handled too: the one such branch, :func:`scseg.models.blocks.match_size`, is swapped for a branch-free copy while
tracing, and every export is checked by onnxruntime at a second size of the other parity.

Why FC-DenseNet differed by ~0.04-0.09 from onnxruntime (U-Net and SD-Net matched to 1e-7): its 3x3 stride-2
transposed convolutions give ``2h + 1`` rows, which ``match_size`` centre-crops to the skip's ``2h`` with
``F.pad(x, [d // 2, d - d // 2, ...])`` and ``d = -1``. Python's ``-1 // 2`` is ``-1`` (crop the first row and
column), but both exporters translate ``//`` on a traced size into ONNX ``Div``, which truncates toward zero: ``0``,
so the ONNX graph cropped the last row and column instead, a one-pixel shift of every up-path feature map at even
sizes (odd sizes need no crop and matched). Eval mode, dropout, BatchNorm and pooling were not the cause. The
export-time ``match_size`` shifts the difference positive before halving, which both divisions agree on.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from scseg.atomic import atomic_write_text
from scseg.engine.loading import load_run
from scseg.models import blocks
from scseg.models.se import ChannelSE, ConcurrentSE, SpatialSE, aggregate_literal

INPUT_NAME = "image"
OUTPUT_NAME = "logits"
# Opset 17 (onnxruntime >= 1.13 and every current runtime read it); all the networks need is in it.
DEFAULT_OPSET = 17
# The largest |onnxruntime - PyTorch| the check accepts (float32 logits; observed differences are ~1e-7).
CHECK_TOLERANCE = 1e-4
# Standard operator domains: the default ONNX domain, named either way.
STANDARD_DOMAINS = ("", "ai.onnx")
SIDECAR_FORMAT = "scseg-onnx-input/1"
INSTALL_HINT = 'scseg-export needs the optional packages onnx and onnxruntime: pip install -e ".[onnx]"'


class ExportError(RuntimeError):
    """The export could not be made or did not pass its check (the message names the file or the size)."""


class OnnxMissingError(ImportError):
    """onnx / onnxruntime (the optional extra ``onnx``) are not installed."""


def require_onnx(runtime: bool = True) -> tuple[Any, Any]:
    """``(onnx, onnxruntime)`` modules (onnxruntime None when not ``runtime``), or :class:`OnnxMissingError` with
    the install hint: they are an optional extra, so a plain install gets one line instead of a traceback."""
    try:
        import onnx
    except ImportError as error:
        raise OnnxMissingError(INSTALL_HINT) from error
    if not runtime:
        return onnx, None
    try:
        import onnxruntime
    except ImportError as error:
        raise OnnxMissingError(INSTALL_HINT) from error
    return onnx, onnxruntime


# ---------------------------------------------------------------------------------------------- tracing helpers
def _floor_half(d: Any) -> Any:
    """``d // 2`` (floor) that stays correct when ``d`` is a traced size: ONNX integer ``Div`` truncates toward
    zero, so the difference is shifted to a positive number first, where floor and truncation agree."""
    offset = 1 << 30  # larger than any in-plane size difference; even, so the shift is undone exactly
    return (d + 2 * offset) // 2 - offset


def traceable_match_size(x: torch.Tensor, size: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """:func:`scseg.models.blocks.match_size` without its size branch and with a floor that survives export: the
    same centre crop / zero pad (numerically identical in PyTorch), for any input size of the traced graph."""
    dh, dw = size[0] - x.shape[-2], size[1] - x.shape[-1]
    top, left = _floor_half(dh), _floor_half(dw)
    return F.pad(x, [left, dw - left, top, dh - top])


def plain_se_forward(block: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The SE block's function in plain tensor operations, built on its public gates (``gate(x)``).

    Why: the blocks' own forward runs custom autograd Functions (or the fused C++ kernels) written for training
    speed; the tracer cannot translate what some of them do in place (``torch.maximum(..., out=...)``), and a
    fused kernel has no ONNX form at all. The gates themselves trace to standard operators.
    """
    concurrent = isinstance(block, ConcurrentSE)
    cse = block.cse if concurrent else block if isinstance(block, ChannelSE) else None
    sse = block.sse if concurrent else block if isinstance(block, SpatialSE) else None
    aggregation = getattr(block, "aggregation", None)
    if concurrent and aggregation not in ("add", "max", "mul", "concat"):
        raise ExportError(f"no plain-operator form of the scSE aggregation {aggregation!r}")

    def forward(x: torch.Tensor) -> torch.Tensor:
        if not concurrent:
            single = cse if cse is not None else sse
            return x * single.gate(x)  # type: ignore[union-attr]
        c, s = cse.gate(x), sse.gate(x)  # type: ignore[union-attr]
        if aggregation == "concat":
            return block.fuse(torch.cat([x * c, x * s], dim=1))
        return aggregate_literal(aggregation, x, c, s)

    return forward


@contextlib.contextmanager
def export_forward(model: nn.Module) -> Iterator[nn.Module]:
    """The network as it is traced: eval mode, every SE block on :func:`plain_se_forward`, and the export-safe
    ``match_size`` in every model module that imported it. Everything is restored on exit."""
    was_training = model.training
    # the paper's three blocks by type (scSE's halves too: harmless, scSE calls their gates, not their forward);
    # any other module keeps its forward, and the operator and numerical checks vouch for it
    se_blocks = [m for m in model.modules() if isinstance(m, (ChannelSE, SpatialSE, ConcurrentSE))]
    patched = [
        module
        for name, module in list(sys.modules.items())
        if name.startswith("scseg.models") and getattr(module, "match_size", None) is blocks.match_size
    ]
    original = blocks.match_size
    try:
        model.eval()
        for block in se_blocks:
            block.forward = plain_se_forward(block)  # an instance attribute shadows the class's forward
        for module in patched:
            module.match_size = traceable_match_size
        yield model
    finally:
        for module in patched:
            module.match_size = original
        for block in se_blocks:
            block.__dict__.pop("forward", None)
        model.train(was_training)


def min_input_size(model: nn.Module) -> int:
    """The smallest in-plane size the network takes: 2 ** (number of 2x2 poolings)."""
    pools = getattr(model, "n_pools", None) or getattr(model, "depth", None)
    return 2 ** int(pools) if pools else 1


# ---------------------------------------------------------------------------------------------- export and check
def export_model(
    model: nn.Module,
    path: str | Path,
    in_channels: int,
    size: Sequence[int],
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Write ``model`` (logits out) as an ONNX graph with dynamic batch, height and width; returns the path.

    ``size``: the in-plane (H, W) traced, best the training canvas. The model is left as it was (mode, SE
    kernels); the graph is checked to hold standard ONNX operators only (:func:`check_standard_ops`).
    """
    onnx, _ = require_onnx(runtime=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = (int(s) for s in size)
    example = torch.zeros(2, int(in_channels), h, w)
    axes = {0: "batch", 2: "height", 3: "width"}
    original_format = next((p for p in model.parameters() if p.dim() == 4), None)
    channels_last = original_format is not None and original_format.is_contiguous(memory_format=torch.channels_last)
    try:
        model.to(memory_format=torch.contiguous_format)  # ONNX is NCHW; trace the NCHW code paths
        with export_forward(model), torch.no_grad(), warnings.catch_warnings():
            # the deprecation notice of dynamo=False (chosen on purpose, see the module docstring) and the tracer's
            # notes on frozen Python values (the numerical check below is what vouches for the graph)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            # InstanceNorm without running statistics normalises per image in eval mode too: exported as it runs
            warnings.filterwarnings("ignore", message="ONNX export mode is set to TrainingMode.EVAL")
            torch.onnx.export(
                model,
                (example,),
                str(path),
                dynamo=False,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes},
                opset_version=int(opset),
                do_constant_folding=True,
            )
    except Exception as error:
        raise ExportError(f"ONNX export to {path} failed: {type(error).__name__}: {error}") from error
    finally:
        if channels_last:
            model.to(memory_format=torch.channels_last)
    check_standard_ops(onnx.load(str(path)), path)
    return path


def graph_domains(model_proto: Any) -> dict[str, set[str]]:
    """Operator domain -> operator types used anywhere in an ONNX model (main graph, subgraphs, functions)."""
    found: dict[str, set[str]] = {}

    def visit(graph: Any) -> None:
        for node in graph.node:
            found.setdefault(node.domain, set()).add(node.op_type)
            for attribute in node.attribute:
                if attribute.HasField("g"):
                    visit(attribute.g)
                for sub in attribute.graphs:
                    visit(sub)

    visit(model_proto.graph)
    for function in model_proto.functions:
        found.setdefault(function.domain, set()).add(function.name)
    return found


def check_standard_ops(model_proto: Any, path: str | Path = "the model") -> None:
    """Raise :class:`ExportError` naming any operator outside the default ONNX domain: a runtime without scseg's
    kernels (or PyTorch) must be able to run the file."""
    custom = {d: ops for d, ops in graph_domains(model_proto).items() if d not in STANDARD_DOMAINS}
    if custom:
        listed = "; ".join(f"{d}: {', '.join(sorted(ops))}" for d, ops in sorted(custom.items()))
        raise ExportError(f"{path} holds non-standard ONNX operators ({listed})")


def check_sizes(size: Sequence[int], minimum: int = 1) -> list[tuple[int, int, int]]:
    """The ``(batch, H, W)`` inputs the check runs: the traced size at batch 1, and a size of the other parity in
    both axes at batch 3 (so a size frozen into the graph, or a crop that differs between parities, shows)."""
    h, w = (max(int(s), minimum) for s in size)
    return [(1, h, w), (3, h + 3, w + 1)]


def check_export(
    model: nn.Module,
    path: str | Path,
    in_channels: int,
    sizes: Sequence[tuple[int, int, int]],
    tolerance: float = CHECK_TOLERANCE,
    seed: int = 0,
) -> list[float]:
    """Run the ONNX file with onnxruntime and ``model`` (eval mode, no gradients) on random inputs of each
    ``(batch, H, W)``; returns the max |difference| per size, or raises :class:`ExportError` naming the size when
    the shapes differ or a difference exceeds ``tolerance``."""
    _, ort = require_onnx()
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())  # the process's thread budget, not every core
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # no busy-waiting on shared CPUs
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(seed)
    differences = []
    was_training = model.training
    model.eval()
    try:
        for batch, h, w in sizes:
            x = torch.randn(batch, int(in_channels), h, w, generator=generator)
            with torch.no_grad():
                expected = model(x).float().cpu().numpy()
            got = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
            shape = (batch, int(in_channels), h, w)
            if got.shape != expected.shape:
                raise ExportError(
                    f"{path}: onnxruntime gives logits of shape {got.shape} for input {shape}, PyTorch {expected.shape}"
                )
            difference = float(np.max(np.abs(got - expected))) if got.size else 0.0
            if not difference <= tolerance:
                raise ExportError(
                    f"{path}: onnxruntime differs from PyTorch by {difference:.3g} (> {tolerance:g}) on input {shape}"
                )
            differences.append(difference)
    finally:
        model.train(was_training)
    return differences


# ---------------------------------------------------------------------------------------------- the run's convention
def input_convention(spec: Any, datamodule: Any, model: nn.Module, onnx_name: str, opset: int) -> dict[str, Any]:
    """What a user of onnxruntime alone needs to prepare inputs and read outputs, from the run's own settings:
    the same steps ``scseg-predict`` takes (:mod:`scseg.data.preprocess`, :mod:`scseg.data.slices`)."""
    settings = datamodule.settings.to_dict()
    canvas = None if datamodule.canvas is None else [int(c) for c in datamodule.canvas]
    modalities, context = int(datamodule.modalities), int(datamodule.context)
    in_channels = (2 * context + 1) * modalities
    names = list(datamodule.class_names)
    m = spec.model
    return {
        "format": SIDECAR_FORMAT,
        "model": onnx_name,
        "opset": int(opset),
        "architecture": m.arch,
        "se": {"name": m.se, "aggregation": m.aggregation if m.se == "scse" else None, "positions": list(m.positions)},
        "input": {
            "name": INPUT_NAME,
            "dtype": "float32",
            "layout": "NCHW",
            "shape": ["batch", in_channels, "height", "width"],
            "channels": in_channels,
            "modalities": modalities,
            "context": context,
            "channel_order": (
                "slice offsets -context..+context (clamped at the volume's ends), each holding every modality in "
                "the run's order: channel = (offset + context) * modalities + modality"
            ),
            "min_size": min_input_size(model),
        },
        "output": {
            "name": OUTPUT_NAME,
            "dtype": "float32",
            "shape": ["batch", len(names), "height", "width"],
            "kind": "logits",
            "note": "arg-max over axis 1 gives the class index; softmax over axis 1 the class probabilities",
            "restore": (
                "labels back in the file's grid: remove the canvas padding, stack the slices along the slice axis, "
                "undo pad_size and the crop (background outside), resample back (probabilities linearly, then "
                "arg-max), reorient from RAS+ to the file's voxel order"
            ),
        },
        "classes": names,
        "num_classes": len(names),
        "slicing": {
            "orientation": (
                "voxel axes reordered and flipped to RAS+ (as nibabel.as_closest_canonical does), array axes (X, Y, Z)"
            ),
            "axis": settings["axis"],
            "fallback_axis": settings["fallback_axis"],
            "anisotropy_threshold": settings["anisotropy_threshold"],
            "in_plane": "height and width are the two remaining array axes, in array order",
            "rule": (
                "axis sagittal/coronal/axial = array axis 0/1/2; acquisition = the axis of largest spacing after "
                "resampling when it is >= anisotropy_threshold x the smallest, else fallback_axis"
            ),
        },
        "canvas": canvas,
        "padding": (
            "each slice is zero-padded, centred, to the canvas (before = (canvas - size) // 2, after = the rest), "
            "after intensity scaling and BEFORE the z-score, so padded pixels become -mean/std; a subject larger "
            "than the canvas is padded to the smallest canvas that holds it. Any height and width >= min_size run."
        ),
        "preprocessing": {
            **settings,
            "steps": [
                "resample to target_spacing (mm, canonical X, Y, Z; null keeps the grid), linear",
                "scale each modality to [0, 1]: intensity.mode percentile (clip to the percentiles, then min-max), "
                "minmax, or ct_window (clip to window in HU)",
                "crop to the bounding box of the foreground (any scaled modality > foreground_threshold) plus "
                "crop_margin voxels, along all three axes",
                "zero-pad the two in-plane axes to pad_size, centred (when set)",
            ],
        },
        "normalization": {
            "mode": datamodule.normalize,
            "rule": (
                "zscore: per subject and modality, mean and std of the [0, 1]-scaled, cropped volume inside its "
                "foreground mask (the whole volume when the mask is empty; a std below 1e-6 counts as 1); every "
                "channel of that modality is (x - mean) / std, applied after the canvas padding. none: unchanged"
            ),
        },
    }


@dataclass
class ExportResult:
    """What :func:`export_run` wrote and how well the check agreed."""

    onnx_path: Path
    sidecar_path: Path
    checked_sizes: list[tuple[int, int, int]] = field(default_factory=list)
    differences: list[float] = field(default_factory=list)


def sidecar_path_for(onnx_path: str | Path) -> Path:
    """``model.onnx`` -> ``model.onnx.json``: the convention travels with the file it describes."""
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(onnx_path.name + ".json")


def export_run(
    run_dir: str | Path,
    output: str | Path,
    checkpoint: str = "best",
    check: bool = True,
    opset: int = DEFAULT_OPSET,
    tolerance: float = CHECK_TOLERANCE,
) -> ExportResult:
    """Export a run folder's network (``checkpoints/<checkpoint>.pt``) to ``output`` and its input convention to
    ``output + ".json"``; with ``check``, compare onnxruntime with PyTorch at two sizes (:func:`check_sizes`).

    A folder that is not a run, or lacks the checkpoint, raises :class:`ExportError` naming the path.
    """
    require_onnx(runtime=check)
    run_dir, output = Path(run_dir), Path(output)
    if not run_dir.is_dir():
        raise ExportError(f"run folder {run_dir} does not exist")
    try:
        spec, datamodule, model, state = load_run(run_dir, checkpoint)
    except FileNotFoundError as error:
        raise ExportError(f"cannot export {run_dir}: {error}") from error
    model = model.cpu()
    in_channels = int(datamodule.in_channels)
    minimum = min_input_size(model)
    canvas = datamodule.canvas
    # no stored canvas (a run that predates it): trace at a size every architecture takes
    size = tuple(int(c) for c in canvas) if canvas is not None else (4 * minimum, 4 * minimum)
    export_model(model, output, in_channels, size, opset)
    convention = input_convention(spec, datamodule, model, output.name, opset)
    convention["run"] = {"folder": str(run_dir.resolve()), "checkpoint": checkpoint, "epoch": state.get("epoch")}
    sidecar = sidecar_path_for(output)
    atomic_write_text(sidecar, json.dumps(_finite(convention), indent=2) + "\n")
    result = ExportResult(output, sidecar)
    if check:
        result.checked_sizes = check_sizes(size, minimum)
        result.differences = check_export(model, output, in_channels, result.checked_sizes, tolerance)
    return result


def _finite(value: Any) -> Any:
    """JSON-safe copy: tuples as lists, non-finite floats as None (strict JSON readers refuse NaN)."""
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


__all__ = [
    "CHECK_TOLERANCE",
    "DEFAULT_OPSET",
    "INSTALL_HINT",
    "ExportError",
    "ExportResult",
    "OnnxMissingError",
    "check_export",
    "check_sizes",
    "check_standard_ops",
    "export_forward",
    "export_model",
    "export_run",
    "graph_domains",
    "input_convention",
    "min_input_size",
    "plain_se_forward",
    "require_onnx",
    "sidecar_path_for",
    "traceable_match_size",
]
