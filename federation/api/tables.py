"""The API's tables in the shared store: registered sites, submitted workflows and plans.

Documents are kept as the JSON the client sent (after validation), so a
``GET`` answers with exactly what was accepted. Workflows and data project
plans carry their ``project``: every query filters on it (multi-tenancy).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Dialect, Float, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from federation.store import Base


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime on every backend (SQLite keeps no time zone: stored naive UTC)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class SiteRow(Base):
    """A site registered in the federation (the ``Site`` model as JSON)."""

    __tablename__ = "api_sites"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(256), default="")


class MadppRow(Base):
    """A data project plan (maDMP 1.2) of one project."""

    __tablename__ = "api_madpp"
    __table_args__ = (Index("ix_api_madpp_project", "project"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    project: Mapped[str] = mapped_column(String(128))
    title: Mapped[str] = mapped_column(String(512), default="")
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    submitted_by: Mapped[str] = mapped_column(String(256), default="")


class WorkflowRow(Base):
    """A submitted workflow of one project, with its summary and optional data plan."""

    __tablename__ = "api_workflows"
    __table_args__ = (Index("ix_api_workflows_project", "project"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    project: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(256))
    format: Mapped[str] = mapped_column(String(32))
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    summary: Mapped[dict[str, Any]] = mapped_column(JSON)
    madpp_id: Mapped[str | None] = mapped_column(
        String(36), ForeignKey("api_madpp.id"), nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    submitted_by: Mapped[str] = mapped_column(String(256), default="")


class PlanRow(Base):
    """A plan of a stored workflow: previewed, approved within a budget, then run."""

    __tablename__ = "api_plans"
    __table_args__ = (Index("ix_api_plans_project", "project"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    project: Mapped[str] = mapped_column(String(128))
    workflow_id: Mapped[str] = mapped_column(ForeignKey("api_workflows.id"))
    planner: Mapped[str] = mapped_column(String(32))
    objective: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16), default="preview")
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    assignments: Mapped[list[Any]] = mapped_column(JSON)
    approved_budget: Mapped[float | None] = mapped_column(default=None)
    run_id: Mapped[str | None] = mapped_column(String(64), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(256), default="")


class TelemetryRow(Base):
    """Telemetry samples received, by site and sender-chosen id (the ingest journal).

    The primary key makes ingest idempotent by sample id. A sample is stored here
    before the answer is sent and applied to the twin afterwards: a service that
    stops in between replays, at start, the samples newer than each site's last
    snapshot (the twin ignores those it already had: same time, or older). Rows
    older than the retention behind a site's estimate are pruned at snapshots.
    """

    __tablename__ = "api_telemetry"
    __table_args__ = (Index("ix_api_telemetry_site_time", "site", "timestamp"),)

    site: Mapped[str] = mapped_column(String(128), primary_key=True)
    sample_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    timestamp: Mapped[float] = mapped_column(Float)
    utilisation: Mapped[float | None] = mapped_column(Float, default=None)
    backlog: Mapped[float | None] = mapped_column(Float, default=None)
    power_price: Mapped[float | None] = mapped_column(Float, default=None)
    carbon_intensity: Mapped[float | None] = mapped_column(Float, default=None)
    links: Mapped[dict[str, float] | None] = mapped_column(JSON, default=None)
    up: Mapped[bool] = mapped_column(Boolean, default=True)


class SimulationRow(Base):
    """A what-if simulation of one project: its scenario, progress and results."""

    __tablename__ = "api_simulations"
    __table_args__ = (Index("ix_api_simulations_project", "project"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    project: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(256))
    scenario: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), default="queued")
    progress: Mapped[float] = mapped_column(default=0.0)
    results: Mapped[list[Any]] = mapped_column(JSON, default=list)
    error: Mapped[str] = mapped_column(String(2000), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    submitted_by: Mapped[str] = mapped_column(String(256), default="")


class WorkflowInputsRow(Base):
    """Where the external inputs of a stored workflow live (item id -> ``InputLocation``)."""

    __tablename__ = "api_workflow_inputs"

    workflow_id: Mapped[str] = mapped_column(ForeignKey("api_workflows.id"), primary_key=True)
    inputs: Mapped[dict[str, Any]] = mapped_column(JSON)


class PlanWorkflowRow(Base):
    """The workflow a plan placed, with everything declared folded in (project sites, data
    plan rules, input locations): what its run executes, exactly as previewed."""

    __tablename__ = "api_plan_workflows"

    plan_id: Mapped[str] = mapped_column(ForeignKey("api_plans.id"), primary_key=True)
    document: Mapped[dict[str, Any]] = mapped_column(JSON)


class SiteStateRow(Base):
    """The last ``AbstractSiteState`` a site's own twin pushed (agent-fed sites).

    Only the abstracted state is kept, never raw telemetry. ``accept_requested``
    holds an operator's request to accept a new level until the site's next
    push picks it up.
    """

    __tablename__ = "api_site_states"

    site_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    received_at: Mapped[float] = mapped_column(Float)
    pushed_by: Mapped[str] = mapped_column(String(256), default="")
    accept_requested: Mapped[bool] = mapped_column(Boolean, default=False)


__all__ = [
    "MadppRow",
    "PlanRow",
    "PlanWorkflowRow",
    "SimulationRow",
    "SiteRow",
    "SiteStateRow",
    "TelemetryRow",
    "WorkflowInputsRow",
    "WorkflowRow",
    "utcnow",
]
