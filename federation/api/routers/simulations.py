"""``/api/v1/projects/{project_id}/simulations`` and ``/api/v1/simulations/{id}``.

A researcher launches a what-if scenario (the YAML of ``continuum simulate``,
as JSON); it runs in the background (at most two at a time) and its progress
and results (one row per planner and seed: waits, makespans, cost, energy,
carbon, utilisation, deadline misses) are kept with the project. A scenario
may only read files under the service's ``<data_dir>/simulation-data`` (and
the embedded demo federation): the scenario is validated with that folder as
its only root (``federation.documents.user_path`` decides, the same function
that every loader calls when it opens a file), so a path that leaves it is 422,
never read.
"""

from __future__ import annotations

import threading
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from federation.api.deps import Context, Member, ProjectReader, ProjectWriter
from federation.api.errors import NotFound
from federation.api.routers._common import UUID_PATTERN, Page, json_safe, prefixed
from federation.api.tables import SimulationRow
from federation.errors import InvalidInput
from federation.store import Store

router = APIRouter(prefix="/api/v1", tags=["simulations"])

RUNNING = threading.BoundedSemaphore(2)


class Launch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scenario: dict[str, Any] = Field(description="a scenario, as in `continuum simulate`")


class SimulationInfo(BaseModel):
    model_config = ConfigDict(from_attributes=True)  # read from the table's row

    id: str
    project: str
    name: str
    state: str
    progress: float
    results: list[dict[str, Any]]
    error: str
    created_at: datetime


def _info(row: SimulationRow) -> SimulationInfo:
    return SimulationInfo.model_validate(row)


@router.post(
    "/projects/{project_id}/simulations",
    status_code=202,
    response_model=SimulationInfo,
    summary="Launch a what-if scenario",
)
def launch(body: Launch, access: ProjectWriter, ctx: Context) -> SimulationInfo:
    from simulations import scenario_from_dict

    base = Path(ctx.settings.data_dir) / "simulation-data"
    base.mkdir(parents=True, exist_ok=True)
    try:
        scenario = scenario_from_dict(
            body.scenario, "<api>", base_dir=str(base), roots=(str(base),)
        )
    except InvalidInput as exc:
        raise prefixed(exc, "body.scenario") from None
    row = SimulationRow(
        id=str(uuid.uuid4()),
        project=access.project,
        name=scenario.name,
        scenario=body.scenario,
        submitted_by=access.who.subject,
    )
    with ctx.store.session() as db:
        db.add(row)
        db.flush()
        info = _info(row)
    threading.Thread(
        target=_run, args=(ctx.store, info.id, scenario), name=f"simulation-{info.id}", daemon=True
    ).start()
    return info


def _run(store: Store, sim_id: str, scenario: Any) -> None:
    from simulations import compare, run_scenario

    runs = max(1, len(scenario.planners) * len(scenario.seeds))
    done: dict[str, float] = {}

    def progress(label: str, fraction: float) -> None:
        done[label] = fraction
        with store.session() as db:
            row = db.get(SimulationRow, sim_id)
            if row is not None:
                row.progress = min(sum(done.values()) / runs, 1.0)

    with RUNNING:
        _set(store, sim_id, state="running")
        try:
            results = run_scenario(scenario, progress)
            table = json_safe(compare(results).to_dict(orient="records"))
            _set(store, sim_id, state="done", progress=1.0, results=table)
        except Exception as exc:  # the error is the simulation's result
            _set(store, sim_id, state="failed", error=f"{type(exc).__name__}: {exc}"[:2000])


def _set(store: Store, sim_id: str, **fields: Any) -> None:
    with store.session() as db:
        row = db.get(SimulationRow, sim_id)
        if row is not None:
            for k, v in fields.items():
                setattr(row, k, v)


@router.get(
    "/projects/{project_id}/simulations",
    response_model=list[SimulationInfo],
    summary="A project's simulations",
)
def list_simulations(access: ProjectReader, ctx: Context, page: Page) -> list[SimulationInfo]:
    with ctx.store.session() as db:
        rows = db.scalars(
            select(SimulationRow)
            .where(SimulationRow.project == access.project)
            .order_by(SimulationRow.created_at, SimulationRow.id)
            .limit(page.limit)
            .offset(page.offset)
        )
        return [_info(r) for r in rows]


@router.get("/simulations/{sim_id}", response_model=SimulationInfo, summary="Progress and results")
def get_simulation(
    who: Member, ctx: Context, sim_id: str = PathParam(pattern=UUID_PATTERN)
) -> SimulationInfo:
    with ctx.store.session() as db:
        row = db.get(SimulationRow, sim_id)
        if row is None or not who.can_read_project(row.project):
            raise NotFound(f"simulation {sim_id!r} not found")
        return _info(row)
