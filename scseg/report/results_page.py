"""Render the results page: one self-contained Markdown page of a sweep's outcome, claim by claim.

Why apart from ``comparison.md``: that report is a working view written into the experiment folder; the results
page is what gets committed (e.g. ``docs/results/``), so it must regenerate byte for byte from the same run
folders. Hence no timestamps, no absolute paths (problem reasons are made relative to the experiment folder),
everything in a fixed order and every number in a fixed format: Dice with ``digits`` decimals, p-values with 4
significant digits, wall times as h:mm:ss.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Sequence
from dataclasses import replace

from scseg.report.claims import ClaimsReport, PairedTest
from scseg.report.provenance import (
    MACHINE_KEYS,
    duration,
    elapsed,
    sweep_command,
    value_counts,
    values_text,
    wall_times,
)
from scseg.report.runs import Problem, Sweep, Variant
from scseg.report.stats import summarise
from scseg.report.tables import (
    BLIND_TO_TRAINING_VARIANCE,
    UNLIKE_MARK,
    ComparisonTables,
    arch_label,
    params_table_markdown,
    problems_markdown,
    structure_table_markdown,
    unlike_notes,
)

NO_VALUE = "—"  # a cell without runs, or a number that cannot be given
ONE_SEED = "-"  # the spread of a cell with one seed
RUN_KEYS: tuple[str, ...] = ("scseg_version", "split")  # listed with the machine: what else a rerun must match


def fmt(value: float, digits: int, signed: bool = False) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def fmt_p(p: float | None) -> str:
    return NO_VALUE if p is None else f"{p:.4g}"


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _seed_spread(means: Sequence[float], ddof: int, digits: int) -> str:
    """Std over seeds of the per-seed means; ``-`` with fewer than two seeds (there is no spread to see)."""
    finite = [m for m in means if not math.isnan(m)]
    return ONE_SEED if len(finite) < 2 else fmt(summarise(finite, ddof=ddof).std, digits)


def main_table(tables: ComparisonTables, digits: int = 3) -> str:
    """Rows architectures, columns variants: mean ± std over subjects (seed-averaged), seeds, seed-to-seed spread."""
    counts = {c.summary.n for c in tables.overall.values()}
    header = ["Architecture"] + [tables.variant_label(v) for v in tables.variants]
    rows = []
    for arch in tables.archs:
        row = [arch_label(arch)]
        for variant in tables.variants:
            cell = tables.overall.get((arch, variant))
            if cell is None:
                row.append(NO_VALUE)
                continue
            spread = _seed_spread(tables.seed_means.get((arch, variant), []), tables.ddof, digits)
            seeds = f"{cell.n_seeds} seed" + ("s" if cell.n_seeds != 1 else "")
            n = f"n={cell.summary.n}, " if len(counts) > 1 else ""
            text = f"{fmt(cell.summary.mean, digits)} ± {fmt(cell.summary.std, digits)} ({n}{seeds}, spread {spread})"
            row.append(f"{text} {UNLIKE_MARK}" if tables.unlike(arch, variant) else text)
        rows.append(row)
    return md_table(header, rows)


def _diff_text(test: PairedTest, digits: int) -> str:
    if test.result is None or test.result.n_pairs == 0:
        return NO_VALUE
    return f"{fmt(test.result.mean_diff, digits, True)} ± {fmt(test.result.std_diff, digits)}"


def _p_text(test: PairedTest) -> str:
    if test.result is None:
        return NO_VALUE
    return fmt_p(test.result.p_value) if test.result.p_value is not None else f"{NO_VALUE} ({test.result.note})"


def _test_row(test: PairedTest, alpha: float, digits: int) -> list[str]:
    pairs = str(test.result.n_pairs) if test.result is not None else NO_VALUE
    return [_diff_text(test, digits), pairs, _p_text(test), fmt_p(test.holm_p), test.verdict(alpha)]


def variant_table(claims: ClaimsReport, digits: int = 3) -> str:
    """The variant-vs-none family: one row per architecture and SE variant, Holm over the whole family."""
    n = len(claims.variant_tests)
    header = ["Architecture", "Variant", "Δ vs none (mean ± std)", "pairs", "Wilcoxon p", f"Holm p ({n})", "Verdict"]
    rows = [
        [arch_label(t.arch), Variant(t.variant).label(), *_test_row(t, claims.alpha, digits)]
        for t in claims.variant_tests
    ]
    return md_table(header, rows)


def claim_tests_table(tests: Sequence[PairedTest], alpha: float, digits: int = 3) -> str:
    header = [
        "Test",
        "mean ± std of paired differences",
        "pairs",
        "Wilcoxon p",
        f"Holm p ({len(tests)})",
        "Verdict",
    ]
    return md_table(header, [[t.label, *_test_row(t, alpha, digits)] for t in tests])


def claims_summary(claims: ClaimsReport) -> str:
    """One row per claim: its verdict and the Holm p that decides it."""
    rows = [[f"{c.key} {c.statement}", c.verdict_text, fmt_p(c.p_value)] for c in claims.claims]
    return md_table(["Claim", "Verdict", "Deciding p (Holm)"], rows)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _subjects(tables: ComparisonTables) -> str:
    counts = sorted({c.summary.n for c in tables.overall.values()})
    if len(counts) == 1:
        return str(counts[0])
    return f"{counts[0]}–{counts[-1]} (cells differ)"


def _seeds(sweep: Sweep) -> str:
    seeds = sorted({r.seed for r in sweep.runs})
    return f"{_plural(len(seeds), 'seed')} ({', '.join(map(str, seeds))})"


def _min_p_note(tables: ComparisonTables, claims: ClaimsReport) -> list[str]:
    """The smallest p an exact two-sided Wilcoxon test over n subjects can give, and which families that rules out."""
    counts = [c.summary.n for c in tables.overall.values() if c.summary.n > 0]
    if not counts:
        return []
    n = min(counts)
    p_min = 2.0 / 2**n
    families = [(c.key, len(c.tests)) for c in claims.claims]
    blocked = [f"{name} ({m} tests)" for name, m in families if m * p_min >= claims.alpha]
    line = f"With {n} subjects the smallest p an exact two-sided Wilcoxon test can give is {fmt_p(p_min)} (2/2^{n})"
    if not blocked:
        return [line + "."]
    listed = blocked[0] if len(blocked) == 1 else ", ".join(blocked[:-1]) + " and " + blocked[-1]
    return [
        f"{line}, so a family of m tests can be Holm-significant only if m × {fmt_p(p_min)} < {claims.alpha:g}: "
        f"{listed} cannot reach significance here, whatever the data."
    ]


def _scope_note(tables: ComparisonTables, claims: ClaimsReport) -> list[str]:
    """Rows of the main table the claims do not test (another architecture, or a swept reduction / position)."""
    others = [a for a in tables.archs if a not in claims.archs]
    if not others:
        return []
    tested = ", ".join(arch_label(a) for a in claims.archs)
    split = [a for a in others if "|" in a]  # row keys of an extra swept setting (runs.row_key)
    why = " (rows split by a swept SE setting are not the paper's cells)" if split else ""
    return [
        f"The claims test {tested}, one row each; the rows {', '.join(arch_label(a) for a in others)} are shown in "
        f"the tables but not tested{why}."
    ]


def _relative_reason(problem: Problem, sweep: Sweep) -> Problem:
    """A problem with the experiment folder's absolute path taken out of its reason (the page must not depend on
    where the runs were read)."""
    reason = problem.reason
    for root in {str(sweep.root.resolve()), str(sweep.root)}:
        reason = reason.replace(root.rstrip("/") + "/", "")
    return replace(problem, reason=reason)


def _likeness(tables: ComparisonTables) -> list[str]:
    verdicts = [
        tables.likeness[a, v].verdict for a in tables.archs for v in tables.variants if (a, v) in tables.likeness
    ]
    alike, unlike, unknown = (verdicts.count(k) for k in ("yes", "no", "unknown"))
    lines = [
        f"{_plural(len(verdicts), 'cell')}: {alike} trained like their `none` baseline (only the SE settings and "
        f"the seed differ), {unlike} not, {unknown} not fully checked (comparison_hash in summary.json, else "
        ".hydra/config.yaml)."
    ]
    lines += unlike_notes(tables)
    lines += [n for n in tables.notes if n.startswith("like with like")]
    return lines


def _wall_time_table(sweep: Sweep, tables: ComparisonTables) -> str:
    header = ["Architecture"] + [tables.variant_label(v) for v in tables.variants]
    rows = []
    for arch in tables.archs:
        row = [arch_label(arch)]
        for variant in tables.variants:
            times = wall_times([r for r in sweep.runs if r.row == arch and r.variant == variant])
            row.append(NO_VALUE if times is None else duration(times.median))
        rows.append(row)
    return md_table(header, rows)


def _provenance(sweep: Sweep, tables: ComparisonTables) -> list[str]:
    command = sweep_command(sweep.runs)
    parts = ["### Sweep command", ""]
    if command.command is None:
        parts += ["Not known: no run folder has .hydra/overrides.yaml.", ""]
    else:
        parts += [
            "Reconstructed from the runs' `.hydra/overrides.yaml` (`paths.*` left out: machine folders):",
            "",
            "```",
            command.command,
            "```",
            "",
        ]
    parts += [f"- {note}" for note in command.notes] + ([""] if command.notes else [])
    parts += ["### Code and machine", ""]
    parts.append(f"- scseg commit: {values_text(value_counts(sweep.runs, 'git_commit'))}")
    parts += [f"- {key}: {values_text(value_counts(sweep.runs, key))}" for key in (*MACHINE_KEYS, *RUN_KEYS)]
    parts += [f"- {note}" for note in tables.notes if not note.startswith("like with like")]
    parts += ["", "### Wall time", ""]
    times = wall_times(sweep.runs)
    if times is None:
        parts += ["Not recorded (no wall_time_s in summary.json).", ""]
    else:
        unknown = f"; {times.n_unknown} run(s) without wall_time_s" if times.n_unknown else ""
        parts += [
            f"Per run (training and test evaluation): median {duration(times.median)}, max {duration(times.max)} "
            f"(`{times.max_run}`), total {duration(times.total)} over {_plural(times.n, 'run')}{unknown}. "
            "Median per cell (h:mm:ss):",
            "",
            _wall_time_table(sweep, tables),
            "",
        ]
    span = elapsed(sweep.runs)
    if span is not None:
        parts += [
            f"Elapsed from the first run's start to the last run's end: {duration(span[0])} over "
            f"{_plural(span[1], 'run')} (`status.json` end times minus wall times; parallel jobs overlap, and gaps "
            "between sessions count).",
            "",
        ]
    return parts


def render_results_page(
    sweep: Sweep,
    tables: ComparisonTables,
    claims: ClaimsReport,
    task: str,
    figure: str | None,
    figure_note: str | None,
    digits: int = 3,
) -> str:
    """The whole page; ``figure`` is the PNG's link relative to the page (None: ``figure_note`` says why not)."""
    alpha = f"{claims.alpha:g}"
    archs = ", ".join(arch_label(a) for a in tables.archs)
    variants = ", ".join(tables.variant_label(v) for v in tables.variants)
    folder = sweep.root.resolve().name
    parts = [
        f"# Results: {task}",
        "",
        f"Generated from the run folders of experiment folder `{folder}` by "
        f"`scseg-compare <runs>/{shlex.quote(folder)} --results-page <this page> --task {shlex.quote(task)}`; "
        "regenerate it rather than edit it.",
        "",
        f"- **Task:** {task}",
        f"- **Compared:** {_plural(len(tables.archs), 'architecture')} ({archs}) × "
        f"{_plural(len(tables.variants), 'SE variant')} ({variants}); {_seeds(sweep)}; "
        f"{_plural(len(sweep.runs), 'run')} used; {_subjects(tables)} test subjects.",
        "- **Decision rule:** each comparison is a two-sided paired Wilcoxon signed-rank test over the test subjects "
        "on each subject's foreground Dice averaged over seeds; the p-values of one family (the variant-vs-none "
        f"comparisons, or one claim's tests) are Holm-adjusted together; a comparison is *reproduced* when its Holm p "
        f"< {alpha} and its mean paired difference has the paper's sign, *contradicted* when its Holm p < {alpha} "
        "with the opposite sign, and *inconclusive* otherwise. " + BLIND_TO_TRAINING_VARIANCE,
        "",
        claims_summary(claims),
        "",
        "## Reading this page",
        "",
        f"- alpha = {alpha}, applied to Holm-adjusted p-values; a `Holm p (m)` column was adjusted over those m tests.",
        f"- {_subjects(tables)} test subjects, {_seeds(sweep)} per cell. Each subject's foreground Dice (mean over "
        "its foreground structures) is first averaged over seeds; cells give mean ± std over subjects "
        f"(ddof={tables.ddof}); tests pair subjects on these seed-averaged values.",
        f"- Spread: std (ddof={tables.ddof}) over seeds of each seed's mean foreground Dice, i.e. how much a rerun "
        f"moves the cell (`{ONE_SEED}` with one seed).",
        f"- Fewer than {tables.min_pairs} paired subjects give no p-value; such comparisons are inconclusive.",
        *(f"- {line}" for line in _min_p_note(tables, claims)),
        *(f"- {line}" for line in _scope_note(tables, claims)),
        "",
        "## Main table",
        "",
        "Mean ± std over test subjects of the seed-averaged foreground Dice (seeds, seed-to-seed spread).",
        "",
        main_table(tables, digits),
        "",
        *(part for line in unlike_notes(tables) for part in (line, "")),
        f"## Each SE variant vs none ({_plural(len(claims.variant_tests), 'comparison')}, Holm over all of them)",
        "",
        variant_table(claims, digits),
        "",
        "## The paper's claims",
        "",
    ]
    for claim in claims.claims:
        decided = f" (deciding Holm p = {fmt_p(claim.p_value)})" if claim.p_value is not None else ""
        parts += [f"### {claim.key}: {claim.statement}", "", f"**Verdict: {claim.verdict_text}**{decided}.", ""]
        parts += [f"Rule: {claim.rule}", ""]
        parts += [line for detail in claim.details for line in (detail, "")]
        if claim.key != "C1":
            parts += [claim_tests_table(claim.tests, claims.alpha, digits), ""]
    parts += ["## Per-structure Dice", "", "Per subject averaged over seeds, then mean ± std over subjects.", ""]
    parts += [
        f"![Per-structure Dice per SE variant and architecture]({figure})"
        if figure
        else f"Figure not drawn: {figure_note}.",
        "",
    ]
    for arch in tables.archs:
        parts += [f"### {arch_label(arch)}", "", structure_table_markdown(tables, arch, digits), ""]
    parts += [
        "## Parameters",
        "",
        "Trainable parameters per cell (summary.json's n_params; in brackets the overhead against `none`).",
        "",
        params_table_markdown(tables),
        "",
        "## Like with like",
        "",
        *(f"- {line}" for line in _likeness(tables)),
        "",
        f"## Runs not used, or used with a caveat ({len(tables.problems)})",
        "",
        problems_markdown([_relative_reason(p, sweep) for p in tables.problems]),
        "",
        "## Provenance",
        "",
        *_provenance(sweep, tables),
    ]
    return "\n".join(parts).rstrip("\n") + "\n"


__all__ = ["claims_summary", "main_table", "render_results_page", "variant_table"]
