"""Checkpoint analysis: the results database, tidy tables, trajectories, change points, plots and reports."""

from .analyze import AnalysisSummary, analyze, describe
from .report import compare, report
from .table import export, load_table
from .trajectory import change_points, change_summary, role_trajectories, trajectory

__all__ = [
    "AnalysisSummary",
    "analyze",
    "change_points",
    "change_summary",
    "compare",
    "describe",
    "export",
    "load_table",
    "report",
    "role_trajectories",
    "trajectory",
]
