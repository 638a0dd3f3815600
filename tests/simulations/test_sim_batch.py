"""Batch queues: FCFS and EASY backfilling on hand-made cases, and invariants under hypothesis."""

from __future__ import annotations

import heapq

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulations import BatchQueue, Job, QueuePolicy


def _queue(policy: str) -> BatchQueue:
    q = BatchQueue(10, policy)
    q.submit(Job(0, 6, run=100, req=100, submit=0))
    assert [j.index for j in q.schedule(0.0)] == [0]
    q.submit(Job(1, 8, run=50, req=50, submit=1))  # blocked head: needs 8, 4 free
    q.submit(Job(2, 4, run=50, req=60, submit=2))  # fits and ends before 100: backfill
    q.submit(Job(3, 2, run=500, req=500, submit=3))  # ends after 100 and 2 <= extra (2)
    q.submit(Job(4, 1, run=10, req=10, submit=4))  # no core left
    return q


def test_fcfs_blocks_behind_the_head() -> None:
    q = _queue("fcfs")
    assert q.schedule(5.0) == []
    assert q.free == 4


def test_easy_backfills_without_delaying_the_head() -> None:
    q = _queue("easy")
    shadow, extra = q.reservation(q.queue[0], 5.0)
    assert (shadow, extra) == (100.0, 2)
    started = q.schedule(5.0)
    assert [j.index for j in started] == [2]
    # job 3 (2 cores, 500 s) would hold cores at t=100 that exceed nothing: extra is 2,
    # but only 0 cores remain free after job 2, so it waits too
    assert q.free == 0
    assert [j.index for j in q.queue] == [1, 3, 4]


def test_easy_uses_extra_cores_for_long_jobs() -> None:
    q = BatchQueue(10, QueuePolicy.EASY)
    q.submit(Job(0, 6, run=100, req=100, submit=0))
    q.schedule(0.0)
    q.submit(Job(1, 8, run=50, req=50, submit=1))
    q.submit(Job(2, 2, run=500, req=500, submit=2))  # 2 <= extra (10 - 8): allowed
    q.submit(Job(3, 2, run=500, req=500, submit=3))  # extra used up: must wait
    assert [j.index for j in q.schedule(1.0)] == [2]
    assert [j.index for j in q.queue] == [1, 3]


def test_kill_all_requeues_at_the_front() -> None:
    q = _queue("easy")
    q.schedule(5.0)
    killed = q.kill_all()
    assert sorted(j.index for j in killed) == [0, 2]
    assert all(j.epoch == 1 and j.kills == 1 for j in killed)
    assert [j.index for j in q.queue][:2] == [0, 2]
    assert q.free == q.capacity


def test_oversized_job_is_refused() -> None:
    with pytest.raises(ValueError, match="needs 11 cores"):
        BatchQueue(10).submit(Job(0, 11, run=1, req=1, submit=0))


def _replay(
    policy: str,
    jobs: list[tuple[int, int, int, int]],
    cap: int,
    reservations: dict[int, float] | None = None,
) -> dict[int, float]:
    """Drive a queue with an event loop; check capacity at every instant; return starts.

    ``reservations`` receives, for every job that became a blocked head, the
    shadow time EASY reserved for it at that moment.
    """
    q = BatchQueue(cap, policy)
    events: list[tuple[float, int, int]] = []  # (time, kind 0=end 1=arrival, job)
    objs = {}
    for i, (sub, cores, run, slack) in enumerate(jobs):
        objs[i] = Job(i, cores, run=run, req=run + slack, submit=sub)
        heapq.heappush(events, (float(sub), 1, i))
    starts: dict[int, float] = {}
    while events:
        t, kind, i = heapq.heappop(events)
        if kind == 0:
            q.finish(objs[i])
        else:
            q.submit(objs[i])
        for job in q.schedule(t):
            starts[job.index] = t
            heapq.heappush(events, (job.end, 0, job.index))
        assert 0 <= q.free <= cap
        assert sum(j.cores for j in q.running) == cap - q.free
        if reservations is not None and q.queue:
            head = q.queue[0]
            reservations.setdefault(head.index, q.reservation(head, t)[0])
    return starts


jobs_strategy = st.lists(
    st.tuples(st.integers(0, 500), st.integers(1, 8), st.integers(1, 200), st.integers(0, 100)),
    min_size=1,
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(jobs_strategy)
def test_every_job_runs_and_capacity_holds(jobs: list[tuple[int, int, int, int]]) -> None:
    for policy in ("fcfs", "easy"):
        starts = _replay(policy, jobs, cap=8)
        assert len(starts) == len(jobs)
        assert all(starts[i] >= jobs[i][0] for i in starts)


@settings(max_examples=60, deadline=None)
@given(jobs_strategy)
def test_fcfs_starts_in_arrival_order(jobs: list[tuple[int, int, int, int]]) -> None:
    starts = _replay("fcfs", jobs, cap=8)
    order = sorted(range(len(jobs)), key=lambda i: (jobs[i][0], i))
    times = [starts[i] for i in order]
    assert times == sorted(times)


@settings(max_examples=80, deadline=None)
@given(jobs_strategy)
def test_easy_keeps_its_reservations_with_exact_estimates(
    jobs: list[tuple[int, int, int, int]],
) -> None:
    # with exact walltimes (slack 0) a blocked head starts no later than the time
    # reserved for it when it reached the head: backfilling never delays it
    exact = [(s, c, r, 0) for s, c, r, _ in jobs]
    reservations: dict[int, float] = {}
    starts = _replay("easy", exact, cap=8, reservations=reservations)
    for i, shadow in reservations.items():
        assert starts[i] <= shadow
