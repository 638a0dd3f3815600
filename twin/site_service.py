"""The twin at the site: a ``SiteTwin`` next to the site's telemetry, publishing only its state.

The federation's founding rule is that raw telemetry stays at the site.
``SiteTwinService`` runs inside the site (``continuum site-agent --telemetry
SOURCE``): it polls a ``TelemetrySource`` (the local probe, a telemetry file
the site's collector appends to, later a Slurm source), applies the samples
to the site's ``SiteTwin``, and publishes the ``AbstractSiteState`` that the
site's disclosure policy lets out, and nothing else: the raw samples, their
``private`` part and the twin's state vector never leave the process.

``HttpPublisher`` sends the state to the federation service
(``PUT /api/v1/sites/{id}/state``, site-operator of that site). The answer
carries the operator's request to accept a new level
(``POST /api/v1/sites/{id}/state/accept``): the service cannot reach into the
site, so the request waits there until the next publication picks it up and
the site's twin closes its fault.

Sources (``telemetry_source``): ``probe`` (this machine, from ``/proc``) or
the path of a CSV/JSON telemetry file (re-read at each poll; rows newer than
the last applied one are new).
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from federation.model import Site
from twin.disclosure import DisclosurePolicy, disclose
from twin.errors import InvalidTelemetry, TwinError
from twin.site import SiteTwin, TwinConfig
from twin.ssm import BlockSpec
from twin.state import AbstractSiteState
from twin.telemetry import LocalProbe, TelemetrySample, TelemetrySource, read_telemetry

log = logging.getLogger(__name__)


class TelemetryFileSource(TelemetrySource):
    """A telemetry file that the site's collector appends to, re-read at each poll.

    Rows of ``site`` newer than the last one returned are new; rows of other
    sites are ignored. A file that does not exist yet has no rows.
    """

    def __init__(self, path: str | Path, site: str) -> None:
        self.path = Path(path)
        self.site = site
        self._last = float("-inf")

    def poll(self, until: float) -> list[TelemetrySample]:
        if not self.path.is_file():
            return []
        rows = [
            s
            for s in read_telemetry(self.path)
            if s.site == self.site and self._last < s.timestamp <= until
        ]
        rows.sort(key=lambda s: s.timestamp)
        if rows:
            self._last = rows[-1].timestamp
        return rows


def telemetry_source(spec: str, site: str) -> TelemetrySource:
    """``probe`` (this machine) or a telemetry file path, as a ``TelemetrySource`` of ``site``."""
    if spec == "probe":
        probe = LocalProbe(site)
        if not probe.available():
            raise InvalidTelemetry.single("/proc", "", "no /proc/stat here: the probe needs Linux")
        return probe
    path = Path(spec.removeprefix("file:"))
    if path.exists() and not path.is_file():
        raise InvalidTelemetry.single(str(path), "", "not a file: give a telemetry CSV/JSON file")
    return TelemetryFileSource(path, site)


@dataclass(frozen=True)
class PublishReply:
    """What the federation answered to a publication."""

    accept_level: bool = False


class StatePublisher(ABC):
    """Where the abstracted state goes (a narrow plug-in point)."""

    @abstractmethod
    def publish(self, state: AbstractSiteState) -> PublishReply:
        """Send ``state``; the reply may carry the operator's request to accept a new level."""


class HttpPublisher(StatePublisher):
    """``PUT {server}/api/v1/sites/{site}/state`` with a bearer token (site-operator)."""

    def __init__(
        self,
        server: str,
        token: str,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 30.0,
    ) -> None:
        self._http = httpx.Client(
            base_url=server.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            transport=transport,
        )

    def publish(self, state: AbstractSiteState) -> PublishReply:
        r = self._http.put(
            f"/api/v1/sites/{state.site_id}/state", json=state.model_dump(mode="json")
        )
        if not r.is_success:
            raise TwinError(
                f"publishing the state of {state.site_id} failed: {r.status_code} {r.text}"
            )
        body: Mapping[str, Any] = r.json()
        return PublishReply(accept_level=bool(body.get("accept_level", False)))

    def site(self, site_id: str) -> Site:
        """The site's registered description (``GET /api/v1/sites/{id}``)."""
        r = self._http.get(f"/api/v1/sites/{site_id}")
        if not r.is_success:
            raise TwinError(f"cannot read site {site_id!r} from the federation: {r.status_code}")
        return Site.model_validate(r.json())

    def close(self) -> None:
        self._http.close()


class SiteTwinService:
    """A site's twin fed by a local telemetry source, publishing only ``AbstractSiteState``.

    Args:
        site: the site's description (cores, nominal figures, disclosure labels).
        source: where the raw samples come from; they never leave this object.
        publisher: where the abstracted state goes.
        config, blocks, links: as for ``SiteTwin``.
        policy: the disclosure policy (default: from the site's labels).
    """

    def __init__(
        self,
        site: Site,
        source: TelemetrySource,
        publisher: StatePublisher,
        config: TwinConfig | None = None,
        blocks: Sequence[BlockSpec] | None = None,
        links: Mapping[str, float] | None = None,
        policy: DisclosurePolicy | None = None,
    ) -> None:
        self.twin = SiteTwin(site, links, config, blocks)
        self.source = source
        self.publisher = publisher
        self.policy = policy or DisclosurePolicy.from_site(site)
        self.published = 0
        self.accepted = 0

    def state(self, now: float | None = None) -> AbstractSiteState:
        """The abstracted state at ``now`` (static figures, status stale, before any sample)."""
        tw = self.twin
        t = time.time() if now is None else now
        status, health = tw.status(t)
        if tw.x is None:
            static = AbstractSiteState.static(
                tw.site, tw.config.horizon, tw.config.slot_seconds, t
            ).model_dump()
            static.update(status=status, health=health)
            for withheld in self.policy.withhold:
                static[withheld] = None if withheld != "expected_wait_s" else 0.0
            return AbstractSiteState.model_validate(static)
        return disclose(tw.site, tw.forecast(), status, health, self.policy)

    def tick(self, now: float | None = None) -> AbstractSiteState:
        """Apply the new samples, publish the state, act on the reply; returns what was sent."""
        t = time.time() if now is None else now
        for sample in self.source.poll(t):
            self.twin.ingest(sample)
        state = self.state(t)
        reply = self.publisher.publish(state)
        self.published += 1
        if reply.accept_level and self.twin.accept():
            self.accepted += 1
            state = self.state(t)
            self.publisher.publish(state)
            self.published += 1
        return state

    def run(self, stop: threading.Event, interval_s: float = 60.0) -> None:
        """Tick every ``interval_s`` seconds until ``stop`` is set (errors logged, not fatal)."""
        while not stop.wait(interval_s):
            try:
                self.tick()
            except (TwinError, httpx.HTTPError) as exc:
                log.warning("site twin of %s: %s", self.twin.site_id, exc)

    def start(self, interval_s: float = 60.0) -> tuple[threading.Thread, threading.Event]:
        """Run ``run`` in a daemon thread; set the returned event to stop it."""
        stop = threading.Event()
        thread = threading.Thread(
            target=self.run, args=(stop, interval_s), name="continuum-site-twin", daemon=True
        )
        thread.start()
        return thread, stop


def start_site_twin(
    server: str, token: str, site_id: str, source: str, interval_s: float = 60.0
) -> Callable[[], None]:
    """Start a site's twin in a thread for ``continuum site-agent --telemetry SOURCE``.

    Reads the site's description from the federation, builds the source
    (``telemetry_source``), publishes a first state at once (errors raise here,
    so a wrong token or site is reported at start) and then every
    ``interval_s`` seconds. Returns a function that stops the thread.
    """
    publisher = HttpPublisher(server, token)
    try:
        service = SiteTwinService(
            publisher.site(site_id), telemetry_source(source, site_id), publisher
        )
        service.tick()
    except BaseException:
        publisher.close()
        raise
    thread, stop = service.start(interval_s)

    def halt() -> None:
        stop.set()
        thread.join(timeout=30)
        publisher.close()

    return halt


__all__ = [
    "HttpPublisher",
    "PublishReply",
    "SiteTwinService",
    "StatePublisher",
    "TelemetryFileSource",
    "start_site_twin",
    "telemetry_source",
]
