"""``scseg-study``: a study's tidy per-case CSV from its run folders, and its results page from that CSV alone.

Usage::

    scseg-study collect RUNS/<experiment> --csv docs/results/<task>/per_case.csv [--merge]
    scseg-study page --csv docs/results/<task>/per_case.csv --page docs/results/<task>.md \\
        --settings configs/report/<task>.yaml --task "MALC 2012 ..."
    scseg-study reproduce --csv A.csv.gz --against B.csv.gz
    scseg-study status RUNS/<experiment>

``collect`` reads every finished run folder (``summary.json`` and ``per_case.csv``) and writes one row per run x
test subject x structure (scseg/report/tidy.py); it prints the folders it left out. ``--merge`` adds the folder's
runs to an existing CSV (runs finished elsewhere or in an earlier session stay; a run in both is replaced).
``page`` analyses the CSV (effects with intervals over runs and subjects, verdicts with an equivalence margin, the
paper's claims, controls; scseg/report/study.py) and writes the Markdown page and, with matplotlib,
``<page stem>_effects.png`` beside it.
The settings file (``configs/report/<task>.yaml``) holds the analysis knobs; ``--set key=value`` overrides one.
``reproduce`` pairs the runs of two CSVs that trained the same network (architecture, parameters, SE settings,
precision, seed, fold; scseg/report/reproduce.py) and says whether their per-case Dice are bit-identical: whether
runs of two commits or machines can be pooled. ``status`` says where a (running) sweep of the experiment folder
stands: runs done, training (epoch), interrupted or failed, and about how long the rest will take
(scseg/engine/progress.py); it only reads, so it is safe beside the sweep.

Exit status: 0 written, 2 bad input (a missing folder or file, a malformed CSV, an unknown setting).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from scseg.atomic import atomic_write_text
from scseg.engine.progress import render_progress
from scseg.report.effects_table import write_effects_csv
from scseg.report.reproduce import pair_runs, render_pairs
from scseg.report.study import StudySettings, analyse
from scseg.report.study_page import render, write_forest_plot
from scseg.report.tidy import collect, merge_rows, read_csv, write_csv


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scseg-study", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("collect", help="run folders -> tidy per-case CSV")
    c.add_argument("experiment", type=Path, help="experiment folder holding one sub-folder per run")
    c.add_argument("--csv", type=Path, required=True, help="where to write the tidy CSV")
    c.add_argument(
        "--merge",
        action="store_true",
        help="keep the rows of runs already in --csv that the folder does not hold (a run in both: the folder's)",
    )
    p = sub.add_parser("page", help="tidy per-case CSV -> results page (+ forest plot)")
    p.add_argument("--csv", type=Path, required=True, help="the tidy CSV (scseg-study collect)")
    p.add_argument("--page", type=Path, required=True, help="the Markdown page to write")
    p.add_argument("--settings", type=Path, default=None, help="analysis settings YAML (configs/report/<task>.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one setting (YAML value)")
    p.add_argument("--task", default=None, help="the task named in the page's title (default: the CSV's folder)")
    p.add_argument("--no-figures", action="store_true", help="do not draw the forest plot")
    p.add_argument("--command", default=None, help="the command the page says made it (default: this one)")
    p.add_argument(
        "--effects-csv",
        type=Path,
        default=None,
        help="also write every effect of the page, unrounded, as a CSV (scseg/report/effects_table.py)",
    )
    r = sub.add_parser("reproduce", help="did the same network train the same in two CSVs (commits, machines)?")
    r.add_argument("--csv", type=Path, required=True, help="one tidy CSV (scseg-study collect)")
    r.add_argument("--against", type=Path, required=True, help="the other tidy CSV")
    s = sub.add_parser("status", help="where a sweep stands: runs done, training, failed; the time left")
    s.add_argument("experiment", type=Path, help="experiment folder holding one sub-folder per run")
    return parser


def load_settings(path: Path | None, overrides: Sequence[str]) -> tuple[StudySettings, str | None]:
    """The settings file's mapping (``report:`` section or the whole file) with ``key=value`` overrides applied,
    and the page title it names (``title``), if any."""
    data: dict = {}
    if path is not None:
        if not path.is_file():
            raise ValueError(f"--settings {path}: no such file")
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: expected a mapping of report settings")
        data = dict(loaded.get("report", loaded))
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        data[key.strip()] = yaml.safe_load(value)
    title = data.pop("title", None)
    try:
        return StudySettings.from_mapping(data), None if title is None else str(title)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path or '--set'}: {err}") from err


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "status":
            try:
                print(render_progress(args.experiment), flush=True)
            except BrokenPipeError:  # `scseg-study status ... | head`: the reader left, which is fine
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # (Python docs' SIGPIPE recipe)
            return 0
        if args.command == "reproduce":
            for path in (args.csv, args.against):
                if not path.is_file():
                    raise ValueError(f"{path}: no such file")
            print(render_pairs(pair_runs(read_csv(args.csv), read_csv(args.against))))
            return 0
        if args.command == "collect":
            rows, notes = collect(args.experiment)
            if not rows:
                raise ValueError(f"{args.experiment}: no finished run folder to collect")
            if args.merge and args.csv.is_file():
                kept = merge_rows(read_csv(args.csv), rows)
                print(f"--merge: kept {len({r.run for r in kept}) - len({r.run for r in rows})} runs of {args.csv}")
                rows = kept
            write_csv(rows, args.csv)
            for note in notes:
                print(note)
            print(f"Wrote {args.csv}: {len(rows)} rows from {len({r.run for r in rows})} runs")
            return 0
        settings, title = load_settings(args.settings, args.set)
        if not args.csv.is_file():
            raise ValueError(f"--csv {args.csv}: no such file")
        rows = read_csv(args.csv)
        analysis = analyse(rows, settings)
    except ValueError as err:
        print(f"scseg-study: {err}", file=sys.stderr)
        return 2
    task = args.task or title or args.csv.parent.name
    figure = None if args.no_figures else args.page.with_name(f"{args.page.stem}_effects.png")
    if figure is not None:
        figure, why_not = write_forest_plot(analysis, figure, task=task)
        if why_not:
            print(f"no forest plot: {why_not}", file=sys.stderr)
    command = args.command or (
        f"scseg-study page --csv {_relative(args.csv, args.page)} --page {_relative(args.page, args.page)}"
        + (f" --settings {_relative(args.settings, args.page)}" if args.settings else "")
        + "".join(f" --set {s}" for s in args.set)
        + (f" --task '{args.task}'" if args.task else "")
        + (f" --effects-csv {_relative(args.effects_csv, args.page)}" if args.effects_csv else "")
    )
    text = render(
        analysis,
        rows,
        task=task,
        command=command,
        csv_name=os.path.relpath(args.csv, args.page.parent),
        figure_name=figure.name if figure else None,
    )
    atomic_write_text(args.page, text)
    if args.effects_csv is not None:
        write_effects_csv(analysis, args.effects_csv)
    for claim in analysis.claims:
        print(f"{claim.key}: {claim.verdict} ({', '.join(claim.deciding) or '-'})")
    written = [args.page, figure, args.effects_csv]
    print("Wrote " + ", ".join(str(path) for path in written if path is not None))
    return 0


def _relative(path: Path, page: Path) -> str:
    """A path as typed relative to the working directory when inside it, else relative to the page's folder (the
    command then reruns from there): pages must not name machine folders."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return os.path.relpath(path.resolve(), page.resolve().parent)


if __name__ == "__main__":
    raise SystemExit(main())
