"""``scseg-compare``: the paper-style comparison report of one experiment's runs.

Usage::

    scseg-compare runs/<experiment> [--out DIR] [--variant-order none,cse,sse,scse]

Reads every run folder ``<arch>-<se>[-<aggregation>]-seed<k>-<hash8>/`` (its ``summary.json`` and
``per_case.csv``) and writes, into the experiment folder unless ``--out`` is given:

- ``comparison.md``: the paper's table (architectures x none / cSE / sSE / scSE, mean ± std over test
  subjects of the subject-level foreground Dice, each subject first averaged over seeds), each variant minus
  ``none`` with a paired Wilcoxon signed-rank p-value, per-structure Dice tables per architecture, and every
  failed, running, unusable or missing run;
- ``comparison.csv``: the same numbers in long format;
- ``comparison_<arch>.png``: per-structure bar charts (like the paper's Fig. 2).

Figures (matplotlib) and p-values (scipy) need the optional extra ``pip install -e .[report]``; without it
the tables are still written and the report says what was skipped.  The main table is printed.

Exit status: 0 when the report was written (failed runs are listed in it), 2 when the folder does not
exist, holds no runs, or an option is invalid.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from scseg.report.build import build_report
from scseg.report.runs import DEFAULT_AGGREGATION, SweepError
from scseg.report.stats import MIN_PAIRS
from scseg.report.tables import DEFAULT_ARCH_ORDER, DEFAULT_VARIANT_ORDER, parse_variant_order


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scseg-compare", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("experiment", help="experiment folder holding one sub-folder per run")
    parser.add_argument("--out", default=None, help="where to write the report (default: the experiment folder)")
    parser.add_argument(
        "--variant-order",
        default=",".join(DEFAULT_VARIANT_ORDER),
        help="column order; tokens none, cse, sse, scse or scse-<aggregation> (default: %(default)s)",
    )
    parser.add_argument(
        "--arch-order",
        default=",".join(DEFAULT_ARCH_ORDER),
        help="row order; architectures not named follow alphabetically (default: %(default)s)",
    )
    parser.add_argument(
        "--default-aggregation",
        default=DEFAULT_AGGREGATION,
        help="scSE aggregation shown as plain 'scSE'; others get their own column "
        "(default: %(default)s, as in the MICCAI paper)",
    )
    parser.add_argument(
        "--ddof",
        type=int,
        default=1,
        help="delta degrees of freedom of the std over subjects "
        "(default: %(default)s, the sample std, as summary.json's fg_std)",
    )
    parser.add_argument(
        "--min-pairs",
        type=int,
        default=MIN_PAIRS,
        help="fewest paired subjects for a Wilcoxon p-value (default: %(default)s)",
    )
    parser.add_argument(
        "--alternative",
        default="two-sided",
        choices=("two-sided", "greater", "less"),
        help="Wilcoxon alternative hypothesis for variant - none (default: %(default)s)",
    )
    parser.add_argument(
        "--background-ids",
        default="0",
        help="comma-separated class ids left out of the per-structure tables (default: 0)",
    )
    parser.add_argument("--digits", type=int, default=3, help="decimals in the Markdown tables (default: 3)")
    parser.add_argument("--dpi", type=int, default=120, help="resolution of the PNG figures (default: 120)")
    parser.add_argument("--no-figures", action="store_true", help="do not draw the PNG figures")
    return parser


def _int_list(text: str, option: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError as err:
        raise ValueError(f"{option}: expected comma-separated integers, got {text!r}") from err


def main(argv: Sequence[str] | None = None) -> int:
    """Write the report; returns the process exit status (0 written, 2 nothing to report or bad option)."""
    args = _parser().parse_args(argv)
    try:
        variant_order = parse_variant_order(args.variant_order)
        background_ids = _int_list(args.background_ids, "--background-ids")
        if args.ddof < 0 or args.min_pairs < 1 or args.digits < 0:
            raise ValueError("--ddof and --digits must be >= 0 and --min-pairs >= 1")
    except ValueError as err:
        print(f"scseg-compare: {err}", file=sys.stderr)
        return 2
    try:
        result = build_report(
            args.experiment,
            out_dir=args.out,
            variant_order=variant_order,
            arch_order=[a.strip() for a in args.arch_order.split(",") if a.strip()],
            default_aggregation=args.default_aggregation.lower(),
            ddof=args.ddof,
            min_pairs=args.min_pairs,
            alternative=args.alternative,
            background_ids=background_ids,
            digits=args.digits,
            figures=not args.no_figures,
            dpi=args.dpi,
        )
    except SweepError as err:
        print(f"scseg-compare: {err}", file=sys.stderr)
        return 2
    print(result.main_table)
    print()
    for message in result.messages:
        print(message)
    print(f"Wrote {result.markdown}, {result.csv}" + "".join(f", {p}" for p in result.figures.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
