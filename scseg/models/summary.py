"""Parameter and compute table of every architecture x SE module (``python -m scseg.models.summary``).

Multiply-adds are counted with forward hooks on convolutions (1D, 2D, 3D), transposed convolutions and linear layers
(one multiply-add per weight use). An SE block counts by its registry formula (``multiply_adds`` of its
:class:`~scseg.se_options.ModuleSpec`: the same convention plus one multiply per element for every gating
product) on the shape it sees (a skip module: the skip tensor, and the gating signal's channels), so a new module
needs no edit here; a module without a formula counts its own convolutions and linear layers. Norms, activations,
pooling and interpolation are left out, as is usual for such tables. Every registered module is a row: block
modules at their default positions (encoder and decoder), skip modules on every skip connection.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable

import torch
from torch import nn

from scseg.models import ARCHITECTURES, count_parameters, create_model
from scseg.models.se import is_recalibration, outermost_blocks
from scseg.se_options import find_module, module_names


def count_multiply_adds(model: nn.Module, input_shape: tuple[int, ...], formulas: bool = True) -> int:
    """Multiply-adds of one forward pass on a zero tensor of ``input_shape`` (N, C, H, W); a skip module alone
    (``maps(x, g)``) is run on ``x`` of ``input_shape`` and a zero ``g`` of its gating channels at the same size.

    ``formulas=False`` counts every layer by its hook, SE blocks included (what the tests hold the formulas to).
    """
    total = 0

    def conv_hook(module: nn.Module, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.ConvTranspose2d):
            # Every input element is multiplied by every kernel weight of its group.
            total += inputs[0].numel() * module.out_channels // module.groups * module.weight[0, 0].numel()
        elif isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            per_output = module.in_channels // module.groups * module.weight[0, 0].numel()
            total += output.numel() * per_output
        elif isinstance(module, nn.Linear):
            total += output.numel() * module.in_features

    def block_hook(module: nn.Module, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
        nonlocal total
        x = inputs[0]
        spec = find_module(module.se_name)
        gating = {"gating_channels": inputs[1].shape[1]} if spec.placement == "skip" else {}
        macs = spec.count_multiply_adds(x.shape[1], tuple(x.shape[2:]), **gating, **module.se_options)
        total += x.shape[0] * int(macs)

    # SE blocks with a formula count as a whole; the layers inside them are not hooked again.
    formula_blocks = [
        m
        for m in outermost_blocks(model, is_recalibration)
        if formulas and (spec := find_module(m.se_name)) is not None and spec.multiply_adds is not None
    ]
    counted_inside = {id(inner) for block in formula_blocks for inner in block.modules()}
    handles = [block.register_forward_hook(block_hook) for block in formula_blocks]
    for module in model.modules():
        if id(module) in counted_inside:
            continue
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear)):
            handles.append(module.register_forward_hook(conv_hook))
    inputs = [torch.zeros(input_shape)]
    gating_channels = getattr(model, "gating_channels", None)
    if isinstance(gating_channels, int):  # a skip module on its own
        inputs.append(torch.zeros(input_shape[0], gating_channels, *input_shape[2:]))
    try:
        model.eval()
        with torch.no_grad():
            model(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    return total


def summary_rows(
    archs: Iterable[str], num_classes: int = 28, in_channels: int = 1, size: int = 256, aggregation: str = "add"
) -> list[dict]:
    """One row per arch x registered SE module (block modules at their default positions, skip modules on every
    skip): parameters, multiply-adds, and overhead relative to ``none``."""
    rows = []
    for arch in archs:
        base_params = base_macs = 0
        for se in module_names():
            model = create_model(arch, num_classes, in_channels=in_channels, se=se, se_aggregation=aggregation)
            params = count_parameters(model)
            macs = count_multiply_adds(model, (1, in_channels, size, size))
            if se == "none":
                base_params, base_macs = params, macs
            rows.append(
                dict(
                    arch=arch,
                    se=se,
                    params=params,
                    gmacs=macs / 1e9,
                    param_overhead_pct=100.0 * (params - base_params) / base_params,
                    mac_overhead_pct=100.0 * (macs - base_macs) / base_macs,
                )
            )
    return rows


def format_table(rows: list[dict]) -> str:
    width = max([5, *(len(r["se"]) for r in rows)])
    header = f"{'arch':<14} {'se':<{width}} {'params':>11} {'GMACs':>8} {'+params %':>9} {'+MACs %':>8}"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['arch']:<14} {r['se']:<{width}} {r['params']:>11,} {r['gmacs']:>8.2f} "
            f"{r['param_overhead_pct']:>9.2f} {r['mac_overhead_pct']:>8.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default=",".join(ARCHITECTURES), help="comma-separated architectures")
    parser.add_argument("--num-classes", type=int, default=28)
    parser.add_argument("--in-channels", type=int, default=1)
    parser.add_argument("--size", type=int, default=256, help="slice height and width")
    parser.add_argument("--aggregation", default="add", help="scSE aggregation")
    args = parser.parse_args(argv)
    rows = summary_rows(args.archs.split(","), args.num_classes, args.in_channels, args.size, args.aggregation)
    print(
        f"Paper-default widths, {args.in_channels} input channel(s), {args.num_classes} classes, "
        f"one {args.size}x{args.size} slice, scSE aggregation '{args.aggregation}', every other option at its "
        "module's default."
    )
    print(format_table(rows))


if __name__ == "__main__":
    main()
