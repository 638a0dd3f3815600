"""The model's event list: mesa's ``DEVSimulator`` with its events as plain tuples.

``TupleDEVSimulator`` keeps mesa's interface and its order of events (time, then
priority, then the order of scheduling: mesa's own ``SimulationEvent`` counter), so a
model runs the same events in the same order as on ``DEVSimulator``. What changes is
the cost of an event: mesa's event list compares ``SimulationEvent`` objects with a
Python ``__lt__`` and wraps every callable in a weak reference; here the heap holds
``(time, priority, id, function, a, b)`` tuples, compared in C.

Two ways in:

* ``schedule_event_absolute`` / ``schedule_event_relative`` / ``schedule_event_now``:
  as mesa's (a ``SimulationEvent`` is returned, ``cancel()`` works, the callable is
  held weakly, a lambda never fires), for the rare events of a model;
* ``call_at(time, function, a, b)``: the hot path (job arrivals and job ends, one or
  more per job), ``function(a, b)`` held strongly, default priority, no event object.
"""

from __future__ import annotations

from collections.abc import Callable
from heapq import heappop, heappush
from typing import Any

from mesa.experimental.devs import DEVSimulator
from mesa.experimental.devs.eventlist import Priority, SimulationEvent

_DEFAULT = int(Priority.DEFAULT)
_ids = SimulationEvent._ids  # the counter mesa's events take their ids from


def _execute(event: SimulationEvent, _: Any) -> None:
    event.execute()


class TupleDEVSimulator(DEVSimulator):
    """``DEVSimulator`` over a heap of tuples (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self._heap: list[tuple[Any, ...]] = []

    def _schedule_event(self, event: SimulationEvent) -> None:
        heappush(self._heap, (event.time, event.priority, event.unique_id, _execute, event, None))

    def schedule_event_absolute(
        self,
        function: Callable[..., Any],
        time: int | float,
        priority: Priority = Priority.DEFAULT,
        function_args: list[Any] | None = None,
        function_kwargs: dict[str, Any] | None = None,
    ) -> SimulationEvent:
        if self.time > time:
            raise ValueError("trying to schedule an event in the past")
        event = SimulationEvent(time, function, priority, function_args, function_kwargs)
        self._schedule_event(event)
        return event

    def call_at(self, time: float, function: Callable[[Any, Any], Any], a: Any, b: Any) -> None:
        """Run ``function(a, b)`` at ``time`` (not before now; default priority)."""
        heappush(self._heap, (time, _DEFAULT, next(_ids), function, a, b))

    def cancel_event(self, event: SimulationEvent) -> None:
        event.cancel()

    def pending(self) -> int:
        """Events in the list (cancelled ones too, until their time comes)."""
        return len(self._heap)

    def run_until(self, end_time: int | float) -> None:
        if self.model is None:
            raise RuntimeError("simulator has not been set up, call simulator.setup(model) first")
        heap = self._heap
        pop = heappop
        while heap:
            item = heap[0]
            t = item[0]
            if t > end_time:
                break
            pop(heap)
            self.time = t
            item[3](item[4], item[5])
        self.time = end_time

    def run_next_event(self) -> None:
        if self.model is None:
            raise RuntimeError("simulator has not been set up, call simulator.setup(model) first")
        if self._heap:
            item = heappop(self._heap)
            self.time = item[0]
            item[3](item[4], item[5])

    def reset(self) -> None:
        super().reset()
        self._heap.clear()
