"""Exact discretisation of the continuous-time blocks for irregular intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twin.errors import ModelError
from twin.ssm import DAY, BlockSpec, StateSpaceModel, discretise


def _model() -> StateSpaceModel:
    return StateSpaceModel(
        (
            BlockSpec("price", trend=True, ar=True, daily=2, weekly=1, q_level=1e-3, q_ar=2e-3),
            BlockSpec("backlog", kind="queue", tau_drain=1800.0, q_inflow=1e-2, q_level=1.0),
        )
    )


@settings(max_examples=30, deadline=None)
@given(dt1=st.floats(1.0, 2 * DAY), dt2=st.floats(1.0, 2 * DAY))
def test_transition_composes_over_irregular_intervals(dt1: float, dt2: float) -> None:
    """A(dt1 + dt2) = A(dt2) A(dt1) and Q(dt1 + dt2) = A(dt2) Q(dt1) A(dt2)^T + Q(dt2)."""
    m = _model()
    A1, Q1 = m.transition(dt1)
    A2, Q2 = m.transition(dt2)
    A, Q = m.transition(dt1 + dt2)
    np.testing.assert_allclose(A, A2 @ A1, rtol=1e-6, atol=1e-9 * np.abs(A).max())
    np.testing.assert_allclose(Q, A2 @ Q1 @ A2.T + Q2, rtol=1e-6, atol=1e-9 * np.abs(Q).max())


def test_harmonic_rotates_by_its_angle_and_queue_drains() -> None:
    m = _model()
    A, _ = m.transition(6 * 3600.0)  # a quarter of a day
    i = m.index("price.day1.c")
    # the first daily pair turns by 90 degrees in 6 hours: c' = s, s' = -c
    np.testing.assert_allclose(A[i : i + 2, i : i + 2], [[0, 1], [-1, 0]], atol=1e-9)
    j = m.index("price.day2.c")
    np.testing.assert_allclose(A[j : j + 2, j : j + 2], [[-1, 0], [0, -1]], atol=1e-9)
    b = m.index("backlog.backlog")
    A1, _ = m.transition(1800.0)
    assert A1[b, b] == pytest.approx(math.exp(-1.0))  # drains with tau = 1800 s
    # inflow beta feeds the backlog: tau (1 - e^-dt/tau)
    assert A1[b, b + 1] == pytest.approx(1800.0 * (1 - math.exp(-1.0)))


def test_q_matches_the_integral_for_a_random_walk_with_trend() -> None:
    """Level + integrated trend: Q = q [[dt^3/3, dt^2/2], [dt^2/2, dt]] for an undamped trend."""
    spec = BlockSpec("u", trend=True, q_level=0.0, q_trend=2.0, tau_trend=1e12)
    F, Qc, _ = spec.continuous()
    dt = 7.0
    A, Q = discretise(F, Qc, dt)
    np.testing.assert_allclose(A, np.array([[1.0, dt], [0.0, 1.0]]), rtol=1e-9)
    np.testing.assert_allclose(
        Q, 2.0 * np.array([[dt**3 / 3, dt**2 / 2], [dt**2 / 2, dt]]), rtol=1e-6
    )


def test_observation_rows_and_constraints() -> None:
    m = StateSpaceModel(
        (BlockSpec("u", ar=True, daily=1, lower=0.0, upper=1.0), BlockSpec("p", weekly=1))
    )
    assert m.observations == ["u", "p"]
    assert m.H[0].tolist() == [1, 1, 1, 0, 0, 0, 0]  # level + ar + day1.c
    assert m.H[1].tolist() == [0, 0, 0, 0, 1, 1, 0]  # level + week1.c
    D, lo, hi = m.constraints()
    assert D.shape == (1, 7)
    assert (lo.tolist(), hi.tolist()) == ([0.0], [1.0])


def test_bad_inputs() -> None:
    with pytest.raises(ModelError, match="time step must be > 0"):
        _model().transition(0.0)
    with pytest.raises(ModelError, match="unique"):
        StateSpaceModel((BlockSpec("a"), BlockSpec("a")))
