"""How a run's steps are launched: a value stored with the run, never a setting of the executor.

Three kinds (``Launch.kind``):

* ``native`` (the default): each step runs its own ``command`` (an argv list or a shell
  line) in its task directory, with ``CONTINUUM_IN`` (its inputs, one file per item id),
  ``CONTINUUM_OUT`` (where it must write each declared output, under the item's id) and
  ``CONTINUUM_SITE`` in its environment. A step without a command cannot be launched
  natively: ``submit`` refuses the run and names the steps.
* ``synthetic``: every step runs the synthetic WfCommons step (``orchestrator.execution.
  synthetic``): one core busy for ``work / (cores x speed of the site) x time_scale``
  seconds, then each output written with ``size x data_scale`` bytes. It lets any WfCommons
  instance run for real; ``speeds`` (site id -> per-core speed) is taken from the federation
  when the run is submitted, so a step re-planned to another site runs at that site's speed.
* ``simulated``: nothing runs and no data moves; each task lasts ``work / (cores x speed) x
  time_scale`` seconds of the simulated site's clock (``TaskSpec.duration_hint``).

A run keeps its launch for its whole life: after a restart of the orchestrator it resumes
with the same one, whatever other runs on the same executor use (Parsl binds an app to its
executor at submission in the same way, without mutating the executor).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from orchestrator.connectors.local import safe_name
from orchestrator.errors import OrchestratorError
from orchestrator.execution import synthetic

if TYPE_CHECKING:
    from federation.model import Federation
    from orchestrator.workflow import Step, Workflow


class LaunchKind(StrEnum):
    NATIVE = "native"
    SYNTHETIC = "synthetic"
    SIMULATED = "simulated"


@dataclass(frozen=True)
class Launch:
    """How the steps of one run are launched (see the module docstring)."""

    kind: LaunchKind = LaunchKind.NATIVE
    time_scale: float = 1.0
    """Factor on the duration of synthetic and simulated steps."""
    data_scale: float = 1.0
    """Factor on the bytes synthetic steps write (and on generated external inputs)."""
    speeds: Mapping[str, float] = field(default_factory=dict)
    """Per-core speed of each site (synthetic and simulated kinds); 1.0 for a site not listed."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", LaunchKind(self.kind))
        for name in ("time_scale", "data_scale"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"launch {name} must be a finite number > 0, got {value}")
        for site, speed in self.speeds.items():
            if not (math.isfinite(speed) and speed > 0):
                raise ValueError(f"launch speed of site {site!r} must be > 0, got {speed}")

    # -- constructors --------------------------------------------------------------------
    @classmethod
    def native(cls) -> Launch:
        return cls(LaunchKind.NATIVE)

    @classmethod
    def synthetic(
        cls, federation: Federation, time_scale: float = 1e-3, data_scale: float = 1e-3
    ) -> Launch:
        return cls(LaunchKind.SYNTHETIC, time_scale, data_scale, _speeds(federation))

    @classmethod
    def simulated(cls, federation: Federation, time_scale: float = 1.0) -> Launch:
        return cls(LaunchKind.SIMULATED, time_scale, 1.0, _speeds(federation))

    # -- what the executor asks ----------------------------------------------------------
    @property
    def moves_data(self) -> bool:
        """Whether steps read and write real files (False for simulated runs)."""
        return self.kind is not LaunchKind.SIMULATED

    def missing_commands(self, workflow: Workflow) -> list[str]:
        """Steps this launch cannot start (a native launch needs every step's command)."""
        if self.kind is not LaunchKind.NATIVE:
            return []
        return [s.id for s in workflow.steps if s.command is None]

    def duration(self, step: Step, site: str) -> float:
        """Seconds the step lasts at ``site`` for synthetic and simulated launches."""
        speed = self.speeds.get(site, 1.0)
        return step.work / (step.cores * speed) * self.time_scale

    def command(self, workflow: Workflow, step: Step, site: str) -> tuple[str, ...] | str:
        """The command line of one attempt of ``step`` at ``site``."""
        if self.kind is LaunchKind.SIMULATED:
            return "true"
        if self.kind is LaunchKind.SYNTHETIC:
            # Started as a script (standard library only), not with -m, to keep it light.
            return (
                sys.executable,
                synthetic.__file__,
                "--seconds",
                f"{self.duration(step, site):.4f}",
                *(f"--in={safe_name(i)}" for i in step.inputs),
                *(
                    f"--out={safe_name(o)}:{int(workflow.item(o).size * self.data_scale)}"
                    for o in step.outputs
                ),
            )
        if step.command is None:
            raise OrchestratorError(
                f"step {step.id!r} has no command: give it one, or run the workflow with a "
                "synthetic launch"
            )
        return step.command

    # -- storage -------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "time_scale": self.time_scale,
            "data_scale": self.data_scale,
            "speeds": dict(self.speeds),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Launch:
        if not data:
            return cls()
        try:
            return cls(
                LaunchKind(data.get("kind", "native")),
                float(data.get("time_scale", 1.0)),
                float(data.get("data_scale", 1.0)),
                {str(k): float(v) for k, v in (data.get("speeds") or {}).items()},
            )
        except (TypeError, ValueError) as exc:
            raise OrchestratorError(f"invalid launch {dict(data)!r}: {exc}") from None

    def describe(self) -> str:
        """One line for people: ``native commands`` or ``synthetic (time x 0.001, ...)``."""
        if self.kind is LaunchKind.NATIVE:
            return "native commands"
        if self.kind is LaunchKind.SYNTHETIC:
            return f"synthetic steps (time x {self.time_scale:g}, data x {self.data_scale:g})"
        return f"simulated (time x {self.time_scale:g})"


def _speeds(federation: Federation) -> dict[str, float]:
    return {s.id: float(s.speed) for s in federation.sites}


__all__ = ["Launch", "LaunchKind"]
