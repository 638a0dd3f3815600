"""The telemetry journal: samples stored before they are acknowledged, replayed after a stop.

``record`` inserts a batch of one site's samples and returns the ids that were
new, in one statement (``INSERT ... ON CONFLICT DO NOTHING RETURNING``, which
SQLite and PostgreSQL both have): concurrent senders of the same ids cannot
both win, and no lock is held across requests. ``newer_than`` reads back what
a twin resumed from an older snapshot has not seen; ``prune`` bounds the table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import Insert, Table, delete, insert, select
from sqlalchemy.orm import Session

from federation.api.tables import TelemetryRow
from twin.telemetry import TelemetrySample

COLUMNS = ("timestamp", "utilisation", "backlog", "power_price", "carbon_intensity", "links", "up")

_SAMPLES: TypeAdapter[list[TelemetrySample]] = TypeAdapter(list[TelemetrySample])


TABLE: Table = TelemetryRow.__table__  # type: ignore[assignment]


def _insert_ignoring_known(db: Session) -> Insert | None:
    """``INSERT ... ON CONFLICT DO NOTHING`` for the store's dialect (None if it has none).

    On the table (Core), not the mapped class: the ORM's bulk path costs more than
    the statement itself for a batch of a hundred rows.
    """
    dialect = db.get_bind().dialect.name
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(TABLE).on_conflict_do_nothing(index_elements=["site", "sample_id"])
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(TABLE).on_conflict_do_nothing(index_elements=["site", "sample_id"])
    return None


def record(db: Session, site: str, rows: Mapping[str, Mapping[str, Any]]) -> set[str]:
    """Store ``rows`` (sample id -> the ``COLUMNS``) of ``site``; returns the ids that were new.

    Ids already stored are left as they were (the first copy of a sample wins).
    """
    if not rows:
        return set()
    values = [{"site": site, "sample_id": sid, **row} for sid, row in rows.items()]
    stmt = _insert_ignoring_known(db)
    if stmt is not None:
        return set(db.connection().execute(stmt.returning(TABLE.c.sample_id), values).scalars())
    # Another backend: look first, then insert (the caller's transaction makes it one step).
    known = set(
        db.scalars(
            select(TelemetryRow.sample_id).where(
                TelemetryRow.site == site, TelemetryRow.sample_id.in_(list(rows))
            )
        )
    )
    new = [v for v in values if v["sample_id"] not in known]
    if new:
        db.execute(insert(TelemetryRow), new)
    return {v["sample_id"] for v in new}


def to_samples(
    site: str, rows: Sequence[Mapping[str, Any]], validated: bool = False
) -> list[TelemetrySample]:
    """The twin's samples of ``site`` from journal rows (validated in one pass).

    ``validated``: the rows come from samples the API's ``Sample`` model has just
    validated (its checks include every check of ``TelemetrySample``), so they are
    built without validating again; rows read back from the store are validated.
    """
    if validated:
        build = TelemetrySample.model_construct
        return [build(site=site, **{**r, "links": r["links"] or {}}) for r in rows]
    return _SAMPLES.validate_python(
        [{"site": site, **{c: r[c] for c in COLUMNS}, "links": r["links"] or {}} for r in rows]
    )


def newer_than(db: Session, site: str, t: float | None) -> list[TelemetrySample]:
    """Samples of ``site`` with a timestamp after ``t`` (all when ``t`` is None), oldest first."""
    cols = [getattr(TelemetryRow, c) for c in COLUMNS]
    q = select(*cols).where(TelemetryRow.site == site)
    if t is not None:
        q = q.where(TelemetryRow.timestamp > t)
    rows = [dict(r._mapping) for r in db.execute(q.order_by(TelemetryRow.timestamp))]
    return to_samples(site, rows)


def prune(db: Session, site: str, before: float) -> int:
    """Forget the samples of ``site`` older than ``before``; returns how many."""
    result = db.execute(
        delete(TelemetryRow).where(TelemetryRow.site == site, TelemetryRow.timestamp < before)
    )
    return int(getattr(result, "rowcount", 0) or 0)


__all__ = ["COLUMNS", "newer_than", "prune", "record", "to_samples"]
