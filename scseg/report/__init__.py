"""Paper-style comparison of a sweep's runs: tables, paired statistics and per-structure figures.

``runs`` reads run folders, ``stats`` does the numbers, ``tables`` builds and writes the tables, ``figures``
draws the optional PNGs and ``build`` ties them together for the ``scseg-compare`` face.
"""

from __future__ import annotations

from scseg.report.build import ReportResult, build_report
from scseg.report.runs import SweepError, load_sweep

__all__ = ["ReportResult", "SweepError", "build_report", "load_sweep"]
