"""The native workflow format and the DAG queries, on cases worked out by hand."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator import InvalidWorkflow, Workflow, load_workflow


def diamond() -> dict[str, Any]:
    #      a
    #    /   \
    #   b     c      (b reads x from a; c only ordered after a)
    #    \   /
    #      d
    return {
        "name": "diamond",
        "data": [
            {"id": "in", "size": 100},
            {"id": "x", "size": "1 kB"},
            {"id": "y", "size": 10},
            {"id": "z", "size": 20},
        ],
        "steps": [
            {"id": "a", "work": 10, "inputs": ["in"], "outputs": ["x"]},
            {"id": "b", "work": 40, "cores": 2, "inputs": ["x"], "outputs": ["y"]},
            {"id": "c", "work": 30, "after": ["a"], "outputs": ["z"]},
            {"id": "d", "work": 5, "inputs": ["y", "z", "x"]},
        ],
    }


def problems(data: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(InvalidWorkflow) as info:
        Workflow.from_dict(data, "wf.yaml")
    return [(p.location, p.message) for p in info.value.problems]


def test_edges_merge_ordering_and_data_dependencies() -> None:
    wf = Workflow.from_dict(diamond())
    assert sorted(wf.edges) == [("a", "b"), ("a", "c"), ("a", "d"), ("b", "d"), ("c", "d")]
    assert wf.parents("d") == ("b", "c", "a")
    assert wf.children("a") == ("b", "c", "d")
    assert wf.sources == ["a"]
    assert wf.sinks == ["d"]
    assert wf.producer("x") == "a"
    assert wf.producer("in") is None
    assert wf.external_inputs() == ["in"]


def test_topological_order_and_levels() -> None:
    wf = Workflow.from_dict(diamond())
    order = wf.topological_order()
    assert order == ["a", "b", "c", "d"]
    assert wf.levels() == {"a": 0, "b": 1, "c": 1, "d": 2}
    assert wf.num_levels() == 3


def test_critical_path_by_hand() -> None:
    wf = Workflow.from_dict(diamond())
    # a: 10 s; b: 40 core-s on 2 cores = 20 s; c: 30 s; d: 5 s -> a, c, d = 45 s
    length, path = wf.critical_path()
    assert length == pytest.approx(45.0)
    assert path == ["a", "c", "d"]
    # with 100 s on every data edge, a -> b -> d carries data twice: 10+100+20+100+5 = 235
    length, path = wf.critical_path(edge_delay=lambda p, c: 100.0 * (wf.edge_bytes(p, c) > 0))
    assert length == pytest.approx(235.0)
    assert path == ["a", "b", "d"]


def test_bytes_on_edges() -> None:
    wf = Workflow.from_dict(diamond())
    assert wf.edge_bytes("a", "b") == 1000
    assert wf.edge_bytes("a", "c") == 0  # ordering only
    assert wf.edge_bytes("a", "d") == 1000
    assert wf.bytes_on_edges() == 1000 + 1000 + 10 + 20
    assert wf.total_work() == 85
    summary = wf.summary()
    assert summary["tasks"] == 4
    assert summary["edges"] == 5
    assert summary["files"] == 4
    assert summary["input_bytes"] == 100


def test_cycle_is_rejected_with_the_cycle_named() -> None:
    data = diamond()
    data["steps"][0]["after"] = ["d"]
    (loc, msg), *_ = problems(data)
    assert loc == "steps"
    assert "cycle" in msg
    cycle = msg.split(": ", 1)[1].split(" -> ")
    assert cycle[0] == cycle[-1]
    assert set(cycle) <= {"a", "b", "c", "d"}
    assert "a" in cycle
    assert "d" in cycle


def test_self_dependency_is_a_cycle() -> None:
    data = diamond()
    data["steps"][2]["after"] = ["c"]
    assert ("steps[2].after", "the workflow has a cycle: c -> c") in problems(data)


def test_unknown_parent_and_item_are_named() -> None:
    data = diamond()
    data["steps"][1]["after"] = ["ghost"]
    data["steps"][3]["inputs"].append("nothing")
    probs = problems(data)
    assert ("steps[1].after[0]", "unknown parent step 'ghost'") in probs
    assert any(
        loc == "steps[3].inputs[3]" and "unknown data item 'nothing'" in m for loc, m in probs
    )


def test_duplicate_ids_and_two_producers() -> None:
    data = diamond()
    data["steps"][2]["id"] = "b"
    data["steps"][2]["outputs"] = ["y"]
    probs = problems(data)
    assert ("steps[2].id", "duplicate step id 'b' (also steps[1])") in probs
    data = diamond()
    data["steps"][2]["outputs"] = ["x"]
    assert ("steps[2].outputs[0]", "data item 'x' is already produced by step 'a'") in problems(
        data
    )


def test_negative_sizes_and_work_are_rejected() -> None:
    data = diamond()
    data["data"][1]["size"] = -5
    assert problems(data)[0][0] == "data[1].size"
    data = diamond()
    data["steps"][0]["work"] = -1
    assert problems(data)[0][0] == "steps[0].work"


def test_constraints_validate_jurisdictions() -> None:
    data = diamond()
    data["steps"][0]["constraints"] = {"jurisdictions": ["Mars"]}
    assert problems(data)[0][0] == "steps[0].constraints.jurisdictions[0]"
    data["steps"][0]["constraints"] = {"jurisdictions": ["fr"], "deadline": "2 h"}
    step = Workflow.from_dict(data).step("a")
    assert step.constraints.jurisdictions == ("FR",)
    assert step.constraints.deadline == 7200


def test_native_round_trip(tmp_path: Any) -> None:
    wf = Workflow.from_dict(diamond())
    assert Workflow.from_dict(wf.to_dict()) == wf


def test_ddf_example_loads(examples_dir: Any) -> None:
    wf = load_workflow(examples_dir / "workflows" / "ddf-pipeline.yaml")
    assert len(wf) == 6
    assert wf.item("raw-ms").allowed_jurisdictions == ("EU",)
    assert wf.num_levels() == 6


def test_unknown_lookups_raise_key_error() -> None:
    wf = Workflow.from_dict(diamond())
    with pytest.raises(KeyError, match="unknown step 'zz'"):
        wf.step("zz")
    with pytest.raises(KeyError, match="unknown data item"):
        wf.item("zz")
