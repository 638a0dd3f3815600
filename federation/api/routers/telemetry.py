"""``/api/v1/sites/{site_id}/telemetry``: batched telemetry ingest into the twin.

A site operator posts a batch of samples of their site; each sample carries
an id chosen by the sender, and a sample whose id was already ingested is
skipped (counted as a duplicate), so a batch can be sent again safely after a
network failure. The twin applies the rest in time order and says what it
did with each: applied, duplicate, out of order (rejected and counted), and
which sites it now flags.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import insert, select

from federation.api.deps import Context, SiteOperator
from federation.api.engine import engine_of
from federation.api.errors import ApiError
from federation.api.tables import TelemetryIdRow
from twin.telemetry import TelemetrySample

router = APIRouter(prefix="/api/v1/sites/{site_id}", tags=["telemetry"])


class Busy(ApiError):
    """The twin is behind on queued telemetry (503, retry shortly)."""

    status = 503
    code = "busy"


MAX_BATCH = 10_000


NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class Sample(BaseModel):
    """One observation of the site; every metric may be missing."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    id: str = Field(min_length=1, max_length=128, description="unique per site, for idempotency")
    timestamp: float = Field(ge=0, le=1e11, description="unix seconds")
    utilisation: float | None = Field(default=None, ge=0.0, le=1.0)
    backlog: float | None = Field(default=None, ge=0.0, description="core-seconds queued")
    power_price: float | None = Field(default=None, description="EUR/kWh")
    carbon_intensity: float | None = Field(default=None, ge=0.0, description="gCO2e/kWh")
    links: dict[Annotated[str, Field(min_length=1, max_length=128)], NonNegative] = Field(
        default_factory=dict, max_length=1000, description="dst site -> bytes/s"
    )
    up: bool = True


class Batch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    samples: list[Sample] = Field(min_length=1, max_length=MAX_BATCH)


@router.post(
    "/telemetry",
    summary="Ingest a batch of the site's telemetry (idempotent by sample id)",
    status_code=202,
)
def ingest(
    batch: Batch,
    access: SiteOperator,
    ctx: Context,
    wait: bool = Query(
        default=False, description="apply to the twin before answering, and report how"
    ),
) -> dict[str, Any]:
    """Record the batch; the twin applies it in the background (``wait=true``: now).

    The answer says how many samples were new (``accepted``) and how many had
    an id already ingested (``duplicates``); with ``wait=true`` it also has the
    twin's report (``applied``, ``rejected_out_of_order``, ``flagged`` sites).
    """
    engine = engine_of(ctx)
    # Already validated by ``Sample`` (same bounds, finite numbers): built without
    # validating a second time.
    samples = [
        TelemetrySample.model_construct(site=access.site, **s.model_dump(exclude={"id"}))
        for s in batch.samples
    ]
    ids = [s.id for s in batch.samples]
    # The engine's lock first, then store connections (never the other way round: a
    # request waiting for the lock holds no connection of the pool). The lock also
    # makes "which ids are new" and "record them" one step.
    with engine.lock:
        engine.twin()  # 409 before anything is recorded when no site is registered
        with ctx.store.session() as db:
            seen = set(
                db.scalars(
                    select(TelemetryIdRow.sample_id).where(
                        TelemetryIdRow.site == access.site, TelemetryIdRow.sample_id.in_(ids)
                    )
                )
            )
            fresh: dict[str, TelemetrySample] = {}
            for sid, sample in zip(ids, samples, strict=True):
                if sid not in seen and sid not in fresh:
                    fresh[sid] = sample
            if fresh:  # one multi-row INSERT, not a unit of work
                db.execute(
                    insert(TelemetryIdRow),
                    [{"site": access.site, "sample_id": sid} for sid in fresh],
                )
    out: dict[str, Any] = {"accepted": len(fresh), "duplicates": len(samples) - len(fresh)}
    if wait:
        if not engine.drain():
            raise Busy(
                "telemetry queued earlier is still being applied; retry", {"Retry-After": "1"}
            )
        report = engine.ingest(list(fresh.values())).to_dict()
        report["duplicates"] += out["duplicates"]
        out.update(report)
    elif fresh:
        out["queued"] = engine.enqueue(list(fresh.values()))
    return out
