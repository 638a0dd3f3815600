"""``/api/v1/sites/{site_id}/telemetry``: batched telemetry ingest into the twin.

A site operator posts a batch of samples of their site; each sample carries
an id chosen by the sender, and a sample whose id was already ingested is
skipped (counted as a duplicate), so a batch can be sent again safely after a
network failure. New samples are stored in the journal (``federation.api.journal``)
before the answer, then applied by the twin in the background, in time order
(``?wait=true``: before the answer, with the twin's report: applied, duplicate,
out of order (rejected and counted), and which sites it now flags). A service
stopped in between replays the journal at start. When the twin is too far
behind, ingest answers 503 with ``Retry-After`` and stores nothing.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from federation.api.deps import Context, SiteOperator
from federation.api.engine import engine_of
from federation.api.errors import ApiError, NotFound
from federation.api.metrics import TELEMETRY_DUPLICATES

router = APIRouter(prefix="/api/v1/sites/{site_id}", tags=["telemetry"])


class Busy(ApiError):
    """The twin is behind on queued telemetry (503, retry shortly)."""

    status = 503
    code = "busy"

    def __init__(self, message: str) -> None:
        super().__init__(message, {"Retry-After": "1"})


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
    # 409 when no site is registered; the twin is built (journal replayed) before this
    # batch is recorded, so a first build does not take the batch for a replay.
    if access.site not in engine.ensure_twin().site_ids:
        raise NotFound(f"site {access.site!r} is not registered: POST /api/v1/sites first")
    # Refusals come before anything is stored (a stored id would make the retry a duplicate).
    limit = ctx.settings.telemetry_queue_max
    if wait and not engine.drain():
        raise Busy("telemetry queued earlier is still being applied; nothing was stored, retry")
    if not wait and engine.queued() + len(batch.samples) > limit:
        raise Busy(f"the twin has more than {limit} samples waiting; nothing was stored, retry")
    rows: dict[str, dict[str, Any]] = {}
    for s in batch.samples:  # the first copy of an id within the batch wins
        if s.id not in rows:
            rows[s.id] = {
                "timestamp": s.timestamp,
                "utilisation": s.utilisation,
                "backlog": s.backlog,
                "power_price": s.power_price,
                "carbon_intensity": s.carbon_intensity,
                "links": s.links or None,
                "up": s.up,
            }
    # Stored (in the journal) before the answer: a sample acknowledged here survives a
    # stop of the service. One statement decides which ids are new, without a lock. The
    # engine records and queues (or applies) in one step, so a rebuild of the twin in
    # between cannot apply a sample twice (see ``federation.api.engine``).
    if wait:
        accepted, report = engine.record_and_apply(access.site, rows)
    else:
        accepted, waiting = engine.record_and_queue(access.site, rows)
    out: dict[str, Any] = {"accepted": accepted, "duplicates": len(batch.samples) - accepted}
    ctx.metrics.count(TELEMETRY_DUPLICATES, out["duplicates"])  # /metrics says what we say
    if wait:
        answer = report.to_dict()
        answer["duplicates"] += out["duplicates"]
        out.update(answer)
    elif accepted:
        out["queued"] = waiting
    return out
