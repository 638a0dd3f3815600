"""Property tests of the DAG utilities on random workflows (hypothesis)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator import InvalidWorkflow, Workflow, find_cycle


@st.composite
def random_dags(draw: st.DrawFn) -> tuple[dict[str, Any], list[tuple[int, int]]]:
    """A random DAG over nodes 0..n-1 (edges i -> j with i < j), declared in a shuffled order."""
    n = draw(st.integers(min_value=1, max_value=25))
    edges = sorted(
        {
            (i, j)
            for i, j in draw(
                st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=60)
            )
            if i < j
        }
    )
    data_edge = {e: draw(st.booleans()) for e in edges}
    works = draw(st.lists(st.integers(0, 1000), min_size=n, max_size=n))
    cores = draw(st.lists(st.integers(1, 8), min_size=n, max_size=n))
    sizes = draw(st.lists(st.integers(0, 10**9), min_size=n, max_size=n))
    order = draw(st.permutations(list(range(n))))
    steps = []
    for k in order:
        ins = [f"o{i}" for (i, j) in edges if j == k and data_edge[(i, j)]]
        after = [f"s{i}" for (i, j) in edges if j == k and not data_edge[(i, j)]]
        steps.append(
            {
                "id": f"s{k}",
                "work": works[k],
                "cores": cores[k],
                "inputs": ins,
                "outputs": [f"o{k}"],
                "after": after,
            }
        )
    data = [{"id": f"o{k}", "size": sizes[k]} for k in range(n)]
    return {"name": "random", "steps": steps, "data": data}, edges


def longest_path(n: int, edges: list[tuple[int, int]], dur: list[float]) -> float:
    """Independent longest path: nodes are already in topological order 0..n-1."""
    best = list(dur)
    for j in range(n):
        for i, jj in edges:
            if jj == j:
                best[j] = max(best[j], best[i] + dur[j])
    return max(best)


@settings(max_examples=150, deadline=None)
@given(random_dags())
def test_topological_order_respects_every_edge(case: tuple[dict[str, Any], list[Any]]) -> None:
    data, edges = case
    wf = Workflow.from_dict(data)
    order = wf.topological_order()
    assert sorted(order) == sorted(s["id"] for s in data["steps"])
    pos = {s: i for i, s in enumerate(order)}
    assert sorted(wf.edges) == sorted((f"s{i}", f"s{j}") for i, j in edges)
    for p, c in wf.edges:
        assert pos[p] < pos[c]


@settings(max_examples=150, deadline=None)
@given(random_dags())
def test_levels_are_longest_hop_counts(case: tuple[dict[str, Any], list[Any]]) -> None:
    data, _ = case
    wf = Workflow.from_dict(data)
    level = wf.levels()
    for s in wf.topological_order():
        parents = wf.parents(s)
        if not parents:
            assert level[s] == 0
        else:
            assert level[s] == 1 + max(level[p] for p in parents)
    assert wf.num_levels() == 1 + max(level.values())


@settings(max_examples=150, deadline=None)
@given(random_dags())
def test_critical_path_is_the_longest_chain(case: tuple[dict[str, Any], list[Any]]) -> None:
    data, edges = case
    wf = Workflow.from_dict(data)
    n = len(data["steps"])
    dur = [0.0] * n
    for s in data["steps"]:
        dur[int(s["id"][1:])] = s["work"] / s["cores"]
    length, path = wf.critical_path()
    assert length == pytest.approx(longest_path(n, edges, dur))
    assert sum(wf.step(s).reference_duration() for s in path) == pytest.approx(length)
    for a, b in itertools.pairwise(path):
        assert a in wf.parents(b)
    assert max(dur) - 1e-9 <= length <= sum(dur) + 1e-9


@settings(max_examples=100, deadline=None)
@given(random_dags())
def test_bytes_on_edges_count_data_edges_only(case: tuple[dict[str, Any], list[Any]]) -> None:
    data, _ = case
    wf = Workflow.from_dict(data)
    size = {d["id"]: d["size"] for d in data["data"]}
    expected = sum(size[i] for s in data["steps"] for i in s["inputs"])
    assert wf.bytes_on_edges() == pytest.approx(expected)


@settings(max_examples=100, deadline=None)
@given(random_dags(), st.data())
def test_a_back_edge_is_reported_as_a_real_cycle(
    case: tuple[dict[str, Any], list[Any]], draw: st.DataObject
) -> None:
    data, edges = case
    if not edges:
        return
    i, j = draw.draw(st.sampled_from(edges))
    # j depends on i; make i depend on j too
    for s in data["steps"]:
        if s["id"] == f"s{i}":
            s["after"] = [*s["after"], f"s{j}"]
    with pytest.raises(InvalidWorkflow) as info:
        Workflow.from_dict(data)
    msg = info.value.problems[0].message
    cycle = msg.split(": ", 1)[1].split(" -> ")
    assert cycle[0] == cycle[-1]
    assert len(cycle) >= 3
    deps = {(f"s{a}", f"s{b}") for a, b in edges} | {(f"s{j}", f"s{i}")}
    for a, b in itertools.pairwise(cycle):
        assert (a, b) in deps


def test_find_cycle_on_plain_graphs() -> None:
    assert find_cycle({"a": ["b"], "b": ["c"], "c": []}) is None
    cycle = find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]})
    assert cycle is not None
    assert cycle[0] == cycle[-1]
    assert set(cycle) == {"a", "b", "c"}
