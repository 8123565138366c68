"""Paper-style comparison of a sweep's runs: tables, paired statistics and per-structure figures.

``runs`` reads run folders, ``stats`` does the numbers, ``tables`` builds and writes the tables, ``figures``
draws the optional PNGs and ``build`` ties them together for the ``scseg-compare`` face. The results page
(``scseg-compare --results-page``) adds ``claims`` (the paper's claims and their decision rules), ``provenance``
(sweep command, machine, wall time, commit) and ``results_page`` (its deterministic Markdown).
"""

from __future__ import annotations

from scseg.report.build import ReportResult, ResultsPageResult, build_report, build_results_page
from scseg.report.runs import SweepError, load_sweep

__all__ = ["ReportResult", "ResultsPageResult", "SweepError", "build_report", "build_results_page", "load_sweep"]
