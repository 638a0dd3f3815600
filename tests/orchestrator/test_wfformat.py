"""WfCommons WfFormat 1.6, 1.5 and 1.4: every instance loads with the counts of the file."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator import InvalidWorkflow, load_wfformat, load_workflow
from orchestrator.wfformat import REFERENCE_MHZ
from tests.conftest import SHARED_DATA, missing

V15 = sorted((SHARED_DATA / "wfinstances").glob("*.json")) if SHARED_DATA.is_dir() else []
V14 = sorted((SHARED_DATA / "wfinstances" / "v1.4").glob("*.json")) if SHARED_DATA.is_dir() else []
V16 = sorted((Path(__file__).parent / "data" / "wfformat-1.6").glob("*.json"))
"""Written by WfCommons 1.6's generators (montage, blast, epigenomics recipes, seed 19)."""


def expected_counts(raw: dict[str, Any]) -> tuple[int, int, int]:
    """Tasks, parent-child pairs and distinct files, counted straight from the JSON."""
    wf = raw["workflow"]
    if raw["schemaVersion"] in ("1.5", "1.6"):
        tasks = wf["specification"]["tasks"]
        pairs = {(p, t["id"]) for t in tasks for p in t["parents"]}
        pairs |= {(t["id"], c) for t in tasks for c in t.get("children", [])}
        return len(tasks), len(pairs), len(wf["specification"]["files"])
    tasks = wf["tasks"]
    pairs = {(p, t["name"]) for t in tasks for p in t["parents"]}
    files = {f["name"] for t in tasks for f in t["files"]}
    return len(tasks), len(pairs), len(files)


@pytest.mark.parametrize("path", V16 + V15 + V14, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shared_instance_loads_with_the_right_counts(path: Path) -> None:
    raw = json.loads(path.read_text())
    wf = load_workflow(path)
    tasks, edges, files = expected_counts(raw)
    summary = wf.summary()
    assert (summary["tasks"], summary["edges"], summary["files"]) == (tasks, edges, files)
    assert summary["total_work_s"] > 0
    assert summary["critical_path_s"] <= summary["total_work_s"] + 1e-9
    order = wf.topological_order()
    position = {s: i for i, s in enumerate(order)}
    assert all(position[p] < position[c] for p, c in wf.edges)


def test_there_are_shared_instances_in_both_versions() -> None:
    if not SHARED_DATA.is_dir():
        missing(f"shared data not available at {SHARED_DATA}")
    assert len(V15) >= 10
    assert len(V14) >= 3


@pytest.mark.parametrize("path", V14, ids=lambda p: p.name)
def test_v14_and_v15_of_the_same_run_agree(path: Path) -> None:
    old = load_workflow(path)
    new = load_workflow(path.parent.parent / path.name)
    assert {s.id for s in old.steps} == {s.id for s in new.steps}
    assert sorted(old.edges) == sorted(new.edges)
    assert old.bytes_on_edges() == pytest.approx(new.bytes_on_edges())
    assert old.total_work() == pytest.approx(new.total_work(), rel=0.02)
    # 1.4 records a category; 1.5 gives the same one through the program's name
    assert {s.id: s.category for s in old.steps} == {s.id: s.category for s in new.steps}


def test_there_are_wfcommons_16_instances() -> None:
    assert len(V16) >= 3
    assert {json.loads(p.read_text())["schemaVersion"] for p in V16} == {"1.6"}


@pytest.mark.parametrize("path", V16, ids=lambda p: p.name)
def test_v16_loads_as_the_same_workflow_as_its_15_form(path: Path) -> None:
    """1.6 adds metrics (and nothing the workflow depends on): without them, and labelled 1.5,
    the same instance gives the same workflow."""
    raw = json.loads(path.read_text())
    old = copy.deepcopy(raw)
    old["schemaVersion"] = "1.5"
    old["workflow"]["specification"].pop("metrics")
    old["workflow"]["execution"].pop("metrics")
    assert raw["workflow"]["specification"]["metrics"]["numberOfTasks"] > 0
    assert load_wfformat(raw).to_dict() == load_wfformat(old).to_dict()


@pytest.mark.parametrize(
    ("section", "metric", "wrong"),
    [
        ("specification", "numberOfTasks", 1),
        ("specification", "sumOfFileSizesInBytes", 12345),
        ("specification", "numberOfLevels", 99),
        ("specification", "maximumWidth", 99),
        ("execution", "sumTaskRuntimesInSeconds", 1.5),
    ],
)
def test_v16_metrics_that_disagree_with_the_instance_are_refused(
    section: str, metric: str, wrong: float
) -> None:
    raw = json.loads(V16[0].read_text())
    raw["workflow"][section]["metrics"][metric] = wrong
    with pytest.raises(InvalidWorkflow) as info:
        load_wfformat(raw, "edited.json")
    found = [(p.location, p.message) for p in info.value.problems]
    assert found[0][0] == f"workflow.{section}.metrics.{metric}", found
    assert f"declares {wrong}" in found[0][1]


def test_v16_truncated_instance_is_refused_by_its_metrics() -> None:
    raw = json.loads(V16[0].read_text())
    raw["workflow"]["specification"]["tasks"].pop()  # a file cut short, still valid JSON
    with pytest.raises(InvalidWorkflow, match="numberOfTasks: declares"):
        load_wfformat(raw, "cut.json")


def test_v16_metrics_of_the_wrong_type_name_the_field() -> None:
    raw = json.loads(V16[0].read_text())
    raw["workflow"]["specification"]["metrics"]["numberOfTasks"] = "many"
    with pytest.raises(InvalidWorkflow) as info:
        load_wfformat(raw, "typed.json")
    locations = [p.location for p in info.value.problems]
    assert "workflow.specification.metrics.numberOfTasks" in locations


def test_v16_task_category_is_the_step_category() -> None:
    raw = hello()
    raw["schemaVersion"] = "1.6"
    raw["workflow"]["execution"]["tasks"][1]["category"] = "analysis"
    wf = load_wfformat(raw)
    assert wf.step("work_ID02").category == "analysis"
    assert wf.step("split_ID01").category == "split"


def hello(n_extra: int = 0) -> dict[str, Any]:
    return {
        "name": "tiny",
        "schemaVersion": "1.5",
        "workflow": {
            "specification": {
                "tasks": [
                    {
                        "name": "split",
                        "id": "split_ID01",
                        "parents": [],
                        "children": ["work_ID02"],
                        "inputFiles": ["in.txt"],
                        "outputFiles": ["part.txt"],
                    },
                    {
                        "name": "work",
                        "id": "work_ID02",
                        "parents": ["split_ID01"],
                        "children": [],
                        "inputFiles": ["part.txt"],
                        "outputFiles": ["out.txt"],
                    },
                ],
                "files": [
                    {"id": "in.txt", "sizeInBytes": 10},
                    {"id": "part.txt", "sizeInBytes": 20},
                    {"id": "out.txt", "sizeInBytes": 30},
                ],
            },
            "execution": {
                "makespanInSeconds": 30,
                "executedAt": "2024-01-01T00:00:00Z",
                "tasks": [
                    {"id": "split_ID01", "runtimeInSeconds": 10, "machines": ["fast"]},
                    {"id": "work_ID02", "runtimeInSeconds": 20, "coreCount": 4},
                ],
                "machines": [{"nodeName": "fast", "cpu": {"coreCount": 8, "speedInMHz": 2500}}],
            },
        },
    }


def test_runtime_becomes_work_at_the_reference_speed() -> None:
    wf = load_wfformat(hello())
    split, work = wf.step("split_ID01"), wf.step("work_ID02")
    assert split.work == pytest.approx(10 * 2500 / REFERENCE_MHZ)  # machine speed known
    assert work.work == pytest.approx(20 * 4)  # no machine: runtime x cores
    assert work.cores == 4
    assert split.category == "split"
    assert wf.edge_bytes("split_ID01", "work_ID02") == 20


def test_reference_speed_is_a_parameter() -> None:
    wf = load_wfformat(hello(), reference_mhz=2500)
    assert wf.step("split_ID01").work == pytest.approx(10)
    with pytest.raises(ValueError, match="reference_mhz"):
        load_wfformat(hello(), reference_mhz=0)


def test_children_only_edges_are_kept() -> None:
    data = hello()
    data["workflow"]["specification"]["tasks"][1]["parents"] = []
    wf = load_wfformat(data)
    assert wf.edges == [("split_ID01", "work_ID02")]


@pytest.mark.parametrize(
    ("mutate", "location", "words"),
    [
        (
            lambda d: d["workflow"]["specification"]["tasks"][1]["parents"].append("ghost"),
            "workflow.specification.tasks[1].parents[1]",
            "unknown task 'ghost'",
        ),
        (
            lambda d: d["workflow"]["specification"]["files"][1].update(sizeInBytes=-1),
            "workflow.specification.files[1].sizeInBytes",
            "less than the minimum of 0",
        ),
        (
            lambda d: d["workflow"]["specification"]["tasks"][1].update(id="split_ID01"),
            "workflow.specification.tasks[1].id",
            "duplicate task id",
        ),
        (
            lambda d: d["workflow"]["specification"]["tasks"][0]["inputFiles"].append("nope.txt"),
            "workflow.specification.tasks[0].inputFiles[1]",
            "unknown file 'nope.txt'",
        ),
        (
            lambda d: d["workflow"]["specification"]["tasks"][0].pop("id"),
            "workflow.specification.tasks[0]",
            "'id' is a required property",
        ),
        (lambda d: d.update(schemaVersion="2.0"), "schemaVersion", "unsupported"),
        (lambda d: d.update(schemaVersion="1.7"), "schemaVersion", "(1.0 to 1.6)"),
    ],
)
def test_malformed_instances_name_the_json_path(mutate: Any, location: str, words: str) -> None:
    data = copy.deepcopy(hello())
    mutate(data)
    with pytest.raises(InvalidWorkflow) as info:
        load_wfformat(data, "bad.json")
    found = [(p.location, p.message) for p in info.value.problems]
    assert any(loc == location and words in msg for loc, msg in found), found


def test_cycle_in_wfformat_points_at_the_tasks() -> None:
    data = hello()
    data["workflow"]["specification"]["tasks"][0]["parents"] = ["work_ID02"]
    with pytest.raises(InvalidWorkflow) as info:
        load_wfformat(data, "cyc.json")
    problem = info.value.problems[0]
    assert problem.location == "workflow.specification.tasks"
    assert "cycle" in problem.message
    assert "split_ID01" in problem.message
    assert "work_ID02" in problem.message


def test_v14_task_names_are_the_identity() -> None:
    data: dict[str, Any] = {
        "name": "old",
        "schemaVersion": "1.4",
        "workflow": {
            "machines": [{"nodeName": "m", "cpu": {"count": 4, "speed": 2000}}],
            "tasks": [
                {
                    "name": "a_ID1",
                    "id": "ID1",
                    "category": "a",
                    "parents": [],
                    "runtimeInSeconds": 5,
                    "machine": "m",
                    "files": [{"link": "output", "name": "f", "sizeInBytes": 7}],
                },
                {
                    "name": "b_ID2",
                    "id": "ID2",
                    "category": "b",
                    "parents": ["a_ID1"],
                    "runtimeInSeconds": 3,
                    "files": [{"link": "input", "name": "f", "sizeInBytes": 7}],
                },
            ],
        },
    }
    wf = load_wfformat(data)
    assert wf.edges == [("a_ID1", "b_ID2")]
    assert wf.step("a_ID1").work == pytest.approx(10.0)
    assert wf.step("b_ID2").category == "b"
    data["workflow"]["tasks"][1]["files"][0]["link"] = "sideways"
    with pytest.raises(InvalidWorkflow, match=r"workflow\.tasks\[1\]\.files\[0\]\.link"):
        load_wfformat(data)
