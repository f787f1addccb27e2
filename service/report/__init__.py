"""The A/B report: per-arm CTR and CVR with user-level intervals, lifts, SRM check, daily breakdown.

``build_report(store, ExperimentArms(...), start, end)`` is the pure entry point; ``report_router``
serves it over HTTP and ``pipeline.report_cli`` adds ``apprank report``.
"""

from service.report.build import ExperimentArms, build_report, srm_check
from service.report.models import ArmReport, DayReport, ExperimentReport, Lift, SrmCheck
from service.report.routes import ExperimentLookup, arms_of, lookup_from_store, report_router

__all__ = [
    "ArmReport",
    "DayReport",
    "ExperimentArms",
    "ExperimentLookup",
    "ExperimentReport",
    "Lift",
    "SrmCheck",
    "arms_of",
    "build_report",
    "lookup_from_store",
    "report_router",
    "srm_check",
]
