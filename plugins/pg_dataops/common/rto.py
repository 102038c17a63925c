"""A measured recovery time judged against the RTO objective and its own trend. Airflow-free.

Shared by the logical restore drill (``pg_dataops.drill.rto``) and point-in-time recovery
(``pg_dataops.pitr``): each measures its own phases and asks :func:`assess_rto` for the verdict.
"""

from __future__ import annotations

import datetime as dt
import statistics
from dataclasses import dataclass
from typing import Any

from pg_dataops.common.errors import PermanentError
from pg_dataops.common.formatting import fmt_duration


class RtoExceeded(PermanentError):
    """The measured recovery time is above the objective."""


@dataclass(frozen=True)
class RtoVerdict:
    status: str  # "ok" | "exceeded" | "trend"
    message: str
    projected_seconds: float | None = None


def assess_rto(measured_seconds: float, objective_seconds: float, history: list[tuple[dt.datetime, float]],
               now: dt.datetime, *, horizon_days: int = 90, min_points: int = 4) -> RtoVerdict:
    """Exceeded now, or heading past the objective within ``horizon_days`` by a least-squares trend.

    ``history`` holds earlier successful measurements (time, total seconds); the current one is added.
    """
    pct = 100.0 * measured_seconds / objective_seconds
    measured, objective = fmt_duration(measured_seconds), fmt_duration(objective_seconds)
    if measured_seconds > objective_seconds:
        return RtoVerdict("exceeded", f"measured RTO {measured} exceeds the objective {objective} ({pct:.0f}%)")
    points = [*history, (now, measured_seconds)]
    trend = _trend(points, now, horizon_days) if len(points) >= min_points else None
    if trend is not None:
        slope, projected = trend
        if slope > 0 and projected > objective_seconds:
            reached_in = (objective_seconds - measured_seconds) / slope
            return RtoVerdict(
                "trend",
                f"measured RTO {measured} is within the objective {objective} ({pct:.0f}%), but growing "
                f"{fmt_duration(slope)} per day: it reaches the objective in about {reached_in:.0f} days",
                projected_seconds=round(projected, 1),
            )
    return RtoVerdict("ok", f"measured RTO {measured} is within the objective {objective} ({pct:.1f}%)")


def _trend(points: list[tuple[dt.datetime, float]], now: dt.datetime,
           horizon_days: int) -> tuple[float, float] | None:
    """(seconds per day, seconds projected ``horizon_days`` after ``now``) of the least-squares line, or
    None when every point has the same time (no line to draw)."""
    t0 = min(t for t, _ in points)
    try:
        slope, intercept = statistics.linear_regression([(t - t0).total_seconds() / 86400 for t, _ in points],
                                                        [seconds for _, seconds in points])
    except statistics.StatisticsError:
        return None
    return slope, intercept + slope * ((now - t0).total_seconds() / 86400 + horizon_days)


__all__ = ["RtoVerdict", "assess_rto"]


@dataclass(frozen=True)
class DrillOutcome:
    """A recorded drill (logical or PITR): its row (with ``id``), and for a successful drill the verdict and the
    Slack text. ``what`` names it in the page an exceeded RTO sends ("restore drill", "PITR drill")."""

    row: dict[str, Any]
    verdict: RtoVerdict | None  # None: the drill failed
    text: str  # the Slack report, or for a failed drill the line for the task log
    what: str = "restore drill"

    @property
    def result(self) -> dict[str, Any]:
        """What the record task returns (its XCom): the row without its bulky ``details``, and the verdict."""
        out = {k: v for k, v in self.row.items() if k != "details"}
        if self.verdict is not None:
            out.update(verdict=self.verdict.status, message=self.verdict.message)
        return out

    def raise_if_exceeded(self) -> None:
        """An RTO above the objective fails the record task (and so the run), which pages; a trend only warns."""
        if self.verdict is not None and self.verdict.status == "exceeded":
            raise RtoExceeded(f"{self.what} of {self.row['target']}: {self.verdict.message}")
