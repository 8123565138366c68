"""Did a network train the same twice? Pairs the runs of two tidy CSVs that trained one network and compares their
per-case Dice.

Why: a study page from one commit and a later sweep from another (or from another CPU) can be pooled or compared
only if the training path gave the same networks. Two runs train "the same network" when everything that shapes it
matches: architecture, parameter count, SE module and options, precision, seed and fold. The variant's label may
differ (``authors_scse`` is ``scse`` by ``max``), and so may the experiment, commit and machine: those are what the
check is about. Bit-identical rows mean the commits (or machines) are interchangeable for that network; otherwise
the largest difference says by how much a rerun moves a case.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from scseg.report.tidy import CaseRow

# What makes two runs the same network (the run's label, experiment, commit and CPU are left out on purpose).
NETWORK_FIELDS = ("arch", "n_params", "se", "aggregation", "gate_scale", "capacity_match", "precision", "seed", "fold")


@dataclass(frozen=True)
class RunPair:
    """One network trained in both CSVs, and how far apart its per-case Dice are."""

    run_a: str
    run_b: str
    variant_a: str
    variant_b: str
    commit_a: str
    commit_b: str
    cpu_a: str
    cpu_b: str
    cases: int  # (subject, structure) rows both runs have
    identical: int  # rows with bit-identical Dice (NaN == NaN counts as identical)
    max_abs_diff: float  # in Dice (0..1); 0.0 when identical
    mean_diff: float  # mean of b's Dice minus a's over the shared rows with finite Dice

    @property
    def bit_identical(self) -> bool:
        return self.cases > 0 and self.identical == self.cases


def _network(row: CaseRow) -> tuple:
    return tuple(getattr(row, f) for f in NETWORK_FIELDS)


def _by_run(rows: Sequence[CaseRow]) -> dict[str, list[CaseRow]]:
    runs: dict[str, list[CaseRow]] = defaultdict(list)
    for row in rows:
        runs[row.run].append(row)
    return runs


def pair_runs(rows_a: Sequence[CaseRow], rows_b: Sequence[CaseRow]) -> list[RunPair]:
    """Every network both CSVs trained, compared case by case (sorted by architecture, variant and seed)."""
    runs_b: dict[tuple, list[list[CaseRow]]] = defaultdict(list)
    for run_rows in _by_run(rows_b).values():
        runs_b[_network(run_rows[0])].append(run_rows)
    pairs = []
    for run_rows in _by_run(rows_a).values():
        for other in runs_b.get(_network(run_rows[0]), []):
            pairs.append(_compare(run_rows, other))
    return sorted(pairs, key=lambda p: (p.variant_a, p.run_a, p.run_b))


def _compare(a: list[CaseRow], b: list[CaseRow]) -> RunPair:
    dice_b = {(r.subject, r.structure): r.dice for r in b}
    shared = [(r.dice, dice_b[(r.subject, r.structure)]) for r in a if (r.subject, r.structure) in dice_b]
    identical = sum(1 for x, y in shared if x == y or (math.isnan(x) and math.isnan(y)))
    finite = [(x, y) for x, y in shared if math.isfinite(x) and math.isfinite(y)]
    diffs = [abs(y - x) for x, y in finite]
    return RunPair(
        run_a=a[0].run,
        run_b=b[0].run,
        variant_a=a[0].variant,
        variant_b=b[0].variant,
        commit_a=a[0].commit,
        commit_b=b[0].commit,
        cpu_a=a[0].cpu,
        cpu_b=b[0].cpu,
        cases=len(shared),
        identical=identical,
        max_abs_diff=max(diffs, default=0.0),
        mean_diff=sum(y - x for x, y in finite) / len(finite) if finite else math.nan,
    )


def render_pairs(pairs: Sequence[RunPair]) -> str:
    """A Markdown table of the pairs, one line each, and a one-line verdict."""
    if not pairs:
        return (
            "No network was trained in both CSVs (same architecture, parameters, SE settings, precision, seed, fold)."
        )
    lines = [
        "| run A | run B | commits | CPUs | cases | bit-identical | max abs diff (points) | mean diff B - A (points) |",
        "|---|---|---|---|---:|---:|---:|---:|",
    ]
    for p in pairs:
        commits = p.commit_a[:8] if p.commit_a == p.commit_b else f"{p.commit_a[:8]} / {p.commit_b[:8]}"
        cpus = p.cpu_a if p.cpu_a == p.cpu_b else f"{p.cpu_a} / {p.cpu_b}"
        lines.append(
            f"| {p.run_a} | {p.run_b} | {commits} | {cpus} | {p.cases} | {p.identical} | "
            f"{100 * p.max_abs_diff:.4f} | {100 * p.mean_diff:+.4f} |"
        )
    same = sum(p.bit_identical for p in pairs)
    lines += ["", f"{same} of {len(pairs)} networks bit-identical on every shared case."]
    return "\n".join(lines)


__all__ = ["NETWORK_FIELDS", "RunPair", "pair_runs", "render_pairs"]
