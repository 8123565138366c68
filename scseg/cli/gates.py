"""``scseg-gates RUN_DIR [--split test]``: what each SE block of a trained run recalibrates, block by block.

Runs the run's best checkpoint over every slice of the split with a hook on each SE block
(:mod:`scseg.engine.gates`; the network itself is unchanged) and writes into the run folder:

- ``gates[_<split>].csv``: per block, the sSE gate's mean and spread inside each structure and in the background
  (the label map downsampled with nearest to the gate's resolution) and the cSE channel gates' mean, spread,
  mean distance from 0.5 (0.5 = no recalibration) and spread over channels;
- ``gates[_<split>].png``: the same as one figure (needs matplotlib, the optional ``report`` extra; without it the
  figure is skipped with a message).

Every registered module is summarised through the same two rows (the CSV's ``map`` column names the map; see
:func:`scseg.engine.gates.map_views`): its first spatial map as "sSE" (CBAM's spatial gate, the attention gate's
alpha on each skip, Project & Excite's excitation and coordinate attention's ``a_h x a_w``, both averaged over
channels) and its channel gate as "cSE" (CBAM, ECA). A module with several spatial maps has only the first
summarised; TensorBoard (``logger.gate_maps``) shows them all.

The test split keeps the plain names, as ``scseg-evaluate`` does. Exit status 0 when written, 2 when the run
cannot be read, has no SE block, or the split holds no labelled subject.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from scseg.atomic import DiskFullError, atomic_write_text
from scseg.data.errors import DataError
from scseg.data.types import SPLITS
from scseg.engine.allocator import tune_allocator
from scseg.engine.gates import GATE_COLUMNS, BlockGateStats, Gates, SEBlock, capture_gates, find_se_blocks
from scseg.engine.loading import load_run
from scseg.engine.tb_logging import label_colours


def measure_gates(
    model: torch.nn.Module,
    datamodule: object,
    split: str,
    batch_size: int,
    device: torch.device | str = "cpu",
) -> tuple[list[BlockGateStats], int]:
    """Gate statistics of every SE block over the labelled subjects of ``split``; also how many subjects were used."""
    blocks = find_se_blocks(model)
    stats = {b.name: BlockGateStats(b, datamodule.num_classes) for b in blocks}
    labels: list[torch.Tensor] = []

    def consume(block: SEBlock, gates: Gates) -> None:
        stats[block.name].add(gates, labels[-1])

    used = 0
    was_training = model.training
    model.eval()
    with torch.no_grad(), capture_gates(model, consume):
        for subject in datamodule.subjects(split):
            slices = datamodule.eval_slices(subject)
            if len(slices) == 0 or "label" not in slices[0]:
                continue
            used += 1
            for batch in DataLoader(slices, batch_size=batch_size, shuffle=False, num_workers=0):
                labels.append(batch["label"])
                model(batch["image"].to(device))
                labels.clear()
    model.train(was_training)
    return [stats[b.name] for b in blocks], used


def gate_rows(stats: Sequence[BlockGateStats], class_names: Sequence[str]) -> list[dict]:
    """All CSV rows, blocks in network order."""
    return [row for block in stats for row in block.rows(list(class_names))]


def write_csv(path: Path, rows: Sequence[dict]) -> None:
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=GATE_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def plot_gates(rows: Sequence[dict], class_names: Sequence[str], path: Path, title: str, dpi: int = 120) -> Path:
    """One figure: (left) mean sSE gate per block inside each structure vs background, error bars = std over
    pixels; (right) cSE gates per block: mean ± std, and the mean distance from 0.5 as bars. Needs matplotlib."""
    # Imported here on purpose: matplotlib is the optional `report` extra; without it only the figure is skipped.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    sse = [r for r in rows if r["gate"] == "sse"]
    cse = [r for r in rows if r["gate"] == "cse"]
    panels = [p for p, present in (("sse", sse), ("cse", cse)) if present]
    fig = Figure(figsize=(6.5 * len(panels), 4.8))
    FigureCanvasAgg(fig)
    colours = label_colours(len(class_names))
    for i, panel in enumerate(panels, start=1):
        ax = fig.add_subplot(1, len(panels), i)
        if panel == "sse":
            blocks = list(dict.fromkeys(r["block"] for r in sse))
            resolution = {r["block"]: r["resolution"] for r in sse}
            width = 0.8 / max(len(class_names), 1)
            for k, name in enumerate(class_names):
                points = [(j, r) for j, b in enumerate(blocks) for r in sse if r["block"] == b and r["class_id"] == k]
                points = [(j, r) for j, r in points if r["mean"] != ""]
                if not points:
                    continue
                xs = [j + (k - (len(class_names) - 1) / 2) * width for j, _ in points]
                colour = "black" if k == 0 else colours[k]
                ax.errorbar(
                    xs,
                    [r["mean"] for _, r in points],
                    yerr=[r["std"] or 0.0 for _, r in points],
                    fmt="o" if k else "s",
                    ms=4,
                    capsize=2,
                    color=colour,
                    label=name,
                )
            ax.set_xticks(range(len(blocks)))
            ax.set_xticklabels([f"{b}\n{resolution[b]}" for b in blocks], fontsize=7)
            ax.set_ylim(0.0, 1.0)
            ax.set_ylabel("spatial gate (mean ± std over pixels)")
            ax.set_title("spatial gate (sSE or the module's map) inside each structure vs background", fontsize=9)
            ax.legend(fontsize=6, ncol=max(1, len(class_names) // 12 + 1), loc="best")
        else:
            blocks = [r["block"] for r in cse]
            xs = range(len(blocks))
            ax.bar(xs, [r["mean_abs_dev_from_half"] or 0.0 for r in cse], color="#f0b050", label="mean |c - 0.5|")
            ax.errorbar(
                xs,
                [r["mean"] or 0.0 for r in cse],
                yerr=[r["std"] or 0.0 for r in cse],
                fmt="o",
                color="#2060a0",
                capsize=3,
                label="mean ± std of c",
            )
            ax.axhline(0.5, color="#c03030", lw=1, ls="--", label="0.5: no recalibration")
            ax.set_xticks(list(xs))
            ax.set_xticklabels([f"{r['block']}\n{r['resolution'].split()[0]} ch" for r in cse], fontsize=7)
            ax.set_ylim(0.0, 1.0)
            ax.set_ylabel("channel gate")
            ax.set_title("channel gates (cSE or the module's) per block", fontsize=9)
            ax.legend(fontsize=7, loc="upper right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    return path


def _summary_lines(stats: Sequence[BlockGateStats], class_names: Sequence[str]) -> list[str]:
    """Terminal table: per block, mean sSE gate in the foreground structures vs background, and cSE's |c - 0.5|."""
    lines = [f"{'block':<12} {'sSE bg':>7} {'sSE fg':>7} {'cSE mean':>9} {'|c-0.5|':>8}"]
    for block in stats:
        bg = fg = cmean = cdev = "-"
        if block.spatial is not None:
            mean, _ = block.spatial.mean_std()
            n_fg = block.spatial.n[1:].sum()
            bg = f"{mean[0]:.3f}" if block.spatial.n[0] else "-"
            fg = f"{block.spatial.s[1:].sum() / n_fg:.3f}" if n_fg else "-"
        if block.channel is not None:
            n = int(block.channel.n[0])
            cmean, cdev = f"{block.channel.s[0] / n:.3f}", f"{block.channel_abs_dev / n:.3f}"
        lines.append(f"{block.block.name:<12} {bg:>7} {fg:>7} {cmean:>9} {cdev:>8}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Measure, write the CSV and the figure; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="scseg-gates", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--split", default="test", choices=SPLITS)
    parser.add_argument("--checkpoint", default="best", choices=("best", "last"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=None, help="slices per forward (default: the run's)")
    parser.add_argument("--no-figure", action="store_true", help="write only the CSV")
    parser.add_argument("--dpi", type=int, default=120)
    args = parser.parse_args(argv)

    tune_allocator()
    try:
        spec, dm, model, _ = load_run(args.run_dir, args.checkpoint)
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"scseg-gates: error: {exc}", file=sys.stderr)
        return 2
    if not find_se_blocks(model):
        print(f"scseg-gates: {args.run_dir} has no SE block (se={spec.model.se}): no gates to measure", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    model.to(device)
    try:
        dm.prepare()
    except (DiskFullError, DataError) as exc:
        print(f"scseg-gates: error: {exc}", file=sys.stderr)
        return 2
    batch_size = args.batch_size or spec.trainer.eval_batch_size
    stats, used = measure_gates(model, dm, args.split, batch_size, device)
    if not used:
        print(f"scseg-gates: the {args.split} split of {args.run_dir} has no labelled subject", file=sys.stderr)
        return 2
    class_names = list(dm.class_names)
    rows = gate_rows(stats, class_names)
    suffix = "" if args.split == "test" else f"_{args.split}"
    csv_path = args.run_dir / f"gates{suffix}.csv"
    try:
        write_csv(csv_path, rows)
    except DiskFullError as exc:
        print(f"scseg-gates: error: {exc}", file=sys.stderr)
        return 2
    written = [str(csv_path)]
    if not args.no_figure:
        png = args.run_dir / f"gates{suffix}.png"
        title = f"{args.run_dir.resolve().name}: SE gates on {args.split} ({used} subjects)"
        try:
            written.append(str(plot_gates(rows, class_names, png, title, args.dpi)))
        except ImportError:
            print("figure skipped: matplotlib is not installed (pip install -e .[report])")
    print(f"{args.run_dir.name} [{args.split}, {used} subjects]")
    print("\n".join(_summary_lines(stats, class_names)))
    print("wrote " + ", ".join(written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
