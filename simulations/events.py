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
* ``call_at(time, function, a, b)``: the hot path (job ends, one per job),
  ``function(a, b)`` held strongly, default priority, no event object;
* ``call_next(time, function, a, b)``: the same in a lane of one pending event beside the
  heap (the job stream's next arrival).
"""

from __future__ import annotations

import math
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
        self._lane: tuple[Any, ...] | None = None
        self._until = -math.inf
        """The end time of the ``run_until`` under way (-inf between runs)."""

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

    def call_next(self, time: float, function: Callable[[Any, Any], Any], a: Any, b: Any) -> None:
        """``call_at`` in the lane: a slot for one pending event outside the heap (a stream
        that always knows its next event, such as the job arrivals, saves a heap push and
        pop per event). The lane's event takes its place in the same order (its id is drawn
        now, as ``call_at``'s); a lane holds one event: it must have run before the next
        ``call_next``."""
        if self._lane is not None:
            raise RuntimeError("the lane holds an event already (one stream may use it)")
        self._lane = (time, _DEFAULT, next(_ids), function, a, b)

    def advance_inline(self, time: float) -> bool:
        """Move the clock to ``time`` now, for the caller to run its own next event inline,
        if no other event comes first or at the same time (a tie is left to the order of
        ids: schedule it instead) and ``time`` is within the current ``run_until``. False:
        the clock did not move."""
        heap = self._heap
        if time > self._until or (heap and heap[0][0] <= time):
            return False
        self.time = time
        return True

    def cancel_event(self, event: SimulationEvent) -> None:
        event.cancel()

    def pending(self) -> int:
        """Events waiting (cancelled ones too, until their time comes)."""
        return len(self._heap) + (self._lane is not None)

    def _next(self, end_time: float) -> tuple[Any, ...] | None:
        """Take the next event if it is due by ``end_time``."""
        heap, lane = self._heap, self._lane
        if heap and (lane is None or heap[0] < lane):
            if heap[0][0] > end_time:
                return None
            return heappop(heap)
        if lane is None or lane[0] > end_time:
            return None
        self._lane = None
        return lane

    def run_until(self, end_time: int | float) -> None:
        if self.model is None:
            raise RuntimeError("simulator has not been set up, call simulator.setup(model) first")
        heap = self._heap
        pop = heappop
        self._until = end_time
        while True:
            # _next, inlined (the loop runs once or twice per job)
            lane = self._lane
            if heap and (lane is None or heap[0] < lane):
                item = heap[0]
                if item[0] > end_time:
                    break
                pop(heap)
            elif lane is not None and lane[0] <= end_time:
                item = lane
                self._lane = None
            else:
                break
            self.time = item[0]
            item[3](item[4], item[5])
        self._until = -math.inf
        self.time = end_time

    def run_next_event(self) -> None:
        if self.model is None:
            raise RuntimeError("simulator has not been set up, call simulator.setup(model) first")
        item = self._next(float("inf"))
        if item is not None:
            self.time = item[0]
            item[3](item[4], item[5])

    def reset(self) -> None:
        super().reset()
        self._heap.clear()
        self._lane = None
