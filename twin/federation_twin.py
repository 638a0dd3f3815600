"""The federation twin: every site's twin (with its outgoing links), queries and snapshots.

``FederationTwin`` ingests batches of ``TelemetrySample`` (any order, any
mix of sites), records the orchestrator's controls, and answers with a
``SiteView`` (site id -> ``AbstractSiteState``) for the planners, forecasts
per site and per link, and statuses. With a ``Store`` it saves each site's
estimate (mean, covariance, time, anomaly window, counters, fitted
parameters) in the ``twin_site_snapshots`` table, and a new twin on the same
store resumes from the last estimate instead of starting from scratch.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import Float, String, Text, select
from sqlalchemy.orm import Mapped, mapped_column

from federation.model import Federation
from federation.store import Base, Store
from twin.disclosure import DisclosurePolicy, disclose
from twin.errors import ModelError
from twin.fit import FitResult, fit_block
from twin.site import BlockForecast, SiteForecast, SiteTwin, TwinConfig
from twin.ssm import BlockSpec
from twin.state import AbstractSiteState, SiteStatus
from twin.telemetry import TelemetrySample


class TwinSnapshotRow(Base):
    """The last saved estimate of one site's twin."""

    __tablename__ = "twin_site_snapshots"

    twin: Mapped[str] = mapped_column(String(200), primary_key=True)
    site_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    saved_at: Mapped[float] = mapped_column(Float)
    estimate_time: Mapped[float | None] = mapped_column(Float, nullable=True)
    state: Mapped[str] = mapped_column(Text)


@dataclass
class IngestReport:
    """Outcome of one ``ingest`` call, by sample."""

    applied: int = 0
    duplicates: int = 0
    rejected_out_of_order: int = 0
    conflicting: int = 0
    unknown_site: int = 0
    flagged: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class FederationTwin:
    """The twins of every site of a federation, ingesting telemetry and answering queries.

    Args:
        federation: the sites and links to twin.
        config: horizon, slot and anomaly thresholds shared by every site.
        policies: per-site disclosure policies (default: from each site's labels).
        params: fitted blocks per site (``fit_site_params`` output) to start from.
        store: where snapshots go; with ``resume`` a previous snapshot of the same
            ``name`` is loaded.
        autosave: with a store, snapshot after every ``ingest`` that applied
            samples, so that a restart resumes from the last estimate.
    """

    def __init__(
        self,
        federation: Federation,
        config: TwinConfig | None = None,
        policies: Mapping[str, DisclosurePolicy] | None = None,
        params: Mapping[str, Sequence[BlockSpec]] | None = None,
        store: Store | None = None,
        name: str = "default",
        resume: bool = True,
        autosave: bool = True,
    ) -> None:
        self.federation = federation
        self.autosave = autosave
        self.config = config or TwinConfig()
        self.name = name
        self.store = store
        self.policies = {
            s.id: (policies or {}).get(s.id) or DisclosurePolicy.from_site(s)
            for s in federation.sites
        }
        self.sites: dict[str, SiteTwin] = {}
        for s in federation.sites:
            links = {lk.dst: float(lk.bandwidth) for lk in federation.links if lk.src == s.id}
            self.sites[s.id] = SiteTwin(s, links, self.config, (params or {}).get(s.id))
        self.resumed: list[str] = []
        if store is not None:
            store.create_tables()
            if resume:
                self._resume(store)

    # --- telemetry -------------------------------------------------------------------------
    def ingest(self, samples: Iterable[TelemetrySample]) -> IngestReport:
        """Apply a batch of samples in time order; report what happened to each."""
        rep = IngestReport()
        ordered = sorted(samples, key=lambda s: s.timestamp)
        # Only the sites in the batch can change status (at their own estimate's time).
        touched = {s.site for s in ordered}
        before = {sid: tw.status()[0] for sid, tw in self.sites.items() if sid in touched}
        for s in ordered:
            tw = self.sites.get(s.site)
            if tw is None:
                rep.unknown_site += 1
                continue
            outcome = tw.ingest(s)
            if outcome == "applied":
                rep.applied += 1
            elif outcome == "duplicate":
                rep.duplicates += 1
            elif outcome == "rejected":
                rep.rejected_out_of_order += 1
            else:
                rep.conflicting += 1
        for sid in before:
            after = self.sites[sid].status()[0]
            if after != before[sid] and after in (SiteStatus.DEGRADED, SiteStatus.DOWN):
                rep.flagged[sid] = after.value
        if self.autosave and self.store is not None and rep.applied:
            self.snapshot()
        return rep

    def accept(self, site_id: str) -> bool:
        """An operator accepts the site's new level: its open fault is closed (False: none)."""
        return self._twin(site_id).accept()

    def control(self, site_id: str, cores: float = 0.0, work: float = 0.0) -> None:
        """Record load the orchestrator dispatched to (or released from) a site."""
        self._twin(site_id).control(cores, work)

    # --- queries ---------------------------------------------------------------------------
    def _twin(self, site_id: str) -> SiteTwin:
        tw = self.sites.get(site_id)
        if tw is None:
            raise KeyError(f"unknown site {site_id!r}; known: {', '.join(self.sites)}")
        return tw

    def forecast(
        self, site_id: str, controls: Sequence[tuple[float, float]] | None = None
    ) -> SiteForecast:
        """The site's forecasts over the horizon, optionally given planned controls."""
        return self._twin(site_id).forecast(controls=controls)

    def link_forecast(self, src: str, dst: str) -> BlockForecast:
        """Forecast throughput (bytes/s) of the link ``src -> dst``."""
        fc = self._twin(src).forecast()
        block = fc.blocks.get(f"link:{dst}")
        if block is None:
            raise KeyError(f"no link {src} -> {dst} in the federation")
        return block

    def status(self, now: float | None = None) -> dict[str, SiteStatus]:
        """Each site's verdict at ``now`` (unix s; default: the wall clock)."""
        t = time.time() if now is None else now
        return {sid: tw.status(t)[0] for sid, tw in self.sites.items()}

    def view(
        self, now: float | None = None, sites: Collection[str] | None = None
    ) -> dict[str, AbstractSiteState]:
        """The planners' view: site id -> abstracted state, through each disclosure policy.

        A site without any telemetry yet is reported from its static figures,
        status stale. ``now`` (unix s, default: the wall clock) decides staleness.
        ``sites`` limits the view to those sites (a plan restricted to a few sites of
        a large federation needs only theirs).
        """
        t = time.time() if now is None else now
        out: dict[str, AbstractSiteState] = {}
        twins = (
            self.sites.items()
            if sites is None
            else [(sid, self.sites[sid]) for sid in sites if sid in self.sites]
        )
        for sid, tw in twins:
            status, health = tw.status(t)
            if tw.x is None:
                static = AbstractSiteState.static(
                    tw.site, self.config.horizon, self.config.slot_seconds, t
                )
                base = static.model_dump()
                base.update(status=SiteStatus.STALE, health=0.0)
                for withheld in self.policies[sid].withhold:
                    base[withheld] = None if withheld != "expected_wait_s" else 0.0
                out[sid] = AbstractSiteState.model_validate(base)
                continue
            out[sid] = disclose(tw.site, tw.forecast(), status, health, self.policies[sid])
        return out

    def counters(self) -> dict[str, dict[str, int]]:
        return {sid: asdict(tw.counters) for sid, tw in self.sites.items()}

    # --- persistence -----------------------------------------------------------------------
    def snapshot(self) -> int:
        """Save every site's estimate to the store; returns the number of rows written."""
        if self.store is None:
            raise ModelError("this FederationTwin has no store: pass store=Store.at(path)")
        now = time.time()
        with self.store.session() as ses:
            for sid, tw in self.sites.items():
                row = ses.get(TwinSnapshotRow, (self.name, sid))
                text = json.dumps(tw.to_state())
                if row is None:
                    ses.add(
                        TwinSnapshotRow(
                            twin=self.name,
                            site_id=sid,
                            saved_at=now,
                            estimate_time=tw.t,
                            state=text,
                        )
                    )
                else:
                    row.saved_at, row.estimate_time, row.state = now, tw.t, text
        return len(self.sites)

    def _resume(self, store: Store) -> None:
        with store.session() as ses:
            rows = ses.scalars(select(TwinSnapshotRow).where(TwinSnapshotRow.twin == self.name))
            for row in rows:
                tw = self.sites.get(row.site_id)
                if tw is None:
                    continue
                self.sites[row.site_id] = SiteTwin.from_state(
                    tw.site, tw.links, self.config, json.loads(row.state)
                )
                self.resumed.append(row.site_id)


@dataclass
class SiteFit:
    """The fitted blocks of one site and each block's fit report."""

    site_id: str
    blocks: list[BlockSpec]
    reports: dict[str, FitResult]


def fit_sites(
    federation: Federation,
    samples: Iterable[TelemetrySample],
    config: TwinConfig | None = None,
    window: int | None = 1500,
) -> dict[str, SiteFit]:
    """Fit every site's block parameters by maximum likelihood on its telemetry history.

    Blocks are independent, so each is fitted on its own metric's series
    (``twin.fit.fit_block``); a block with fewer than 24 observations keeps its
    default parameters (its report is then absent).
    """
    by_site: dict[str, list[TelemetrySample]] = {}
    for s in samples:
        by_site.setdefault(s.site, []).append(s)
    unknown = sorted(set(by_site) - set(federation.site_ids))
    if unknown:
        raise ModelError(
            f"telemetry names sites not in federation {federation.name!r}: {', '.join(unknown)}"
        )
    out: dict[str, SiteFit] = {}
    base = FederationTwin(federation, config)
    for sid, rows in by_site.items():
        rows.sort(key=lambda s: s.timestamp)
        times: list[float] = []
        series: dict[str, list[float]] = {b.name: [] for b in base.sites[sid].model.blocks}
        for s in rows:
            if times and s.timestamp <= times[-1]:
                continue  # duplicates and ties: the first sample wins, as in ingest
            times.append(s.timestamp)
            obs = s.observed()
            for name, vals in series.items():
                vals.append(obs.get(name, float("nan")))
        blocks: list[BlockSpec] = []
        reports: dict[str, FitResult] = {}
        t = np.array(times)
        for spec in base.sites[sid].model.blocks:
            y = np.array(series[spec.name])
            if np.isfinite(y).sum() < 24:
                blocks.append(spec)
                continue
            res = fit_block(spec, t, y, window=window)
            blocks.append(res.spec)
            reports[spec.name] = res
        out[sid] = SiteFit(sid, blocks, reports)
    return out


__all__ = ["FederationTwin", "IngestReport", "SiteFit", "TwinSnapshotRow", "fit_sites"]
