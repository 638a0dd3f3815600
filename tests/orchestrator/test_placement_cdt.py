"""The CDT problem format: the shared instances' known optima, hand-solved cases, bad input."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator import InfeasiblePlan, InvalidCDT, load_cdt, solve_cdt
from orchestrator.placement.cdt import (
    CDTSchedule,
    ScheduledJob,
    check_cdt,
    parse_cdt,
    write_cdt_outputs,
)
from orchestrator.placement.gantt import cdt_gantt
from tests.conftest import shared_path


@pytest.mark.parametrize(
    ("name", "optimum"),
    [("rcpsp_d3_10jobs.json", 24), ("mrcpsp_d4_5jobs_nonrenewable.json", 8)],
)
@pytest.mark.parametrize("solver", ["highs", "cbc"])
def test_shared_instances_reach_their_known_optima(name: str, optimum: int, solver: str) -> None:
    problem = load_cdt(shared_path("cdt", name))
    sched = solve_cdt(problem, "makespan", solver)
    assert sched.makespan == optimum
    assert sched.objective_value == optimum
    assert sched.status == "optimal"
    assert check_cdt(problem, sched) == []


def tiny(**extra: Any) -> dict[str, Any]:
    """Two jobs sharing one unit of a resource; B has a fast, dear mode and a slow, free one."""
    doc: dict[str, Any] = {
        "problem_name": "tiny",
        "resources": [{"resource_id": "cpu", "capacity": 1}],
        "jobs": [{"job_id": "A"}, {"job_id": "B"}],
        "modes": [
            {
                "mode_id": "A1",
                "job_id": "A",
                "duration": 3,
                "cost": 0,
                "resource_requirements": [{"resource_id": "cpu", "demand": 1}],
            },
            {
                "mode_id": "Bfast",
                "job_id": "B",
                "duration": 1,
                "cost": 5,
                "resource_requirements": [{"resource_id": "cpu", "demand": 1}],
            },
            {
                "mode_id": "Bslow",
                "job_id": "B",
                "duration": 4,
                "cost": 0,
                "resource_requirements": [{"resource_id": "cpu", "demand": 1}],
            },
        ],
    }
    doc.update(extra)
    return doc


def test_hand_solved_objectives_makespan_cost_and_weighted() -> None:
    p = parse_cdt(tiny())
    # one cpu: jobs run one after the other
    assert solve_cdt(p, "makespan").makespan == 4  # 3 + Bfast
    cheap = solve_cdt(p, "cost")
    assert (cheap.total_cost, cheap.makespan) == (0.0, 7)  # Bslow, then the shortest order
    assert solve_cdt(p, "weighted").objective_value == 7  # 4 + 5 vs 7 + 0


def test_lags_release_times_and_budgets_are_obeyed() -> None:
    doc = tiny(precedences=[{"predecessor": "A", "successor": "B", "lag": 2}])
    doc["jobs"][0]["release_time"] = 1
    doc["resources"].append({"resource_id": "money", "capacity": 0, "renewable": False})
    doc["modes"][1]["resource_requirements"].append({"resource_id": "money", "demand": 1})
    p = parse_cdt(doc)
    s = solve_cdt(p, "makespan")
    rows = {r.job_id: r for r in s.schedule}
    assert rows["A"].start == 1
    assert rows["B"].start == 6
    assert rows["B"].mode_id == "Bslow"
    assert s.makespan == 10


def test_an_impossible_deadline_raises_infeasible() -> None:
    doc = tiny()
    doc["jobs"][1]["deadline"] = 0
    with pytest.raises(InfeasiblePlan, match="no schedule"):
        solve_cdt(parse_cdt(doc))


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (lambda d: d["modes"][0].update(job_id="Z"), "modes[0].job_id"),
        (lambda d: d["resources"][0].update(resource_id="1"), "resources[0].resource_id"),
        (lambda d: d.update(extra=1), "extra"),
        (lambda d: d["modes"][1]["resource_requirements"][0].update(resource_id="gpu"), "modes[1]"),
        (
            lambda d: d.update(
                precedences=[
                    {"predecessor": "A", "successor": "B"},
                    {"predecessor": "B", "successor": "A"},
                ]
            ),
            "precedences",
        ),
        (lambda d: d["jobs"].append({"job_id": "C"}), "jobs[2]"),
    ],
)
def test_invalid_documents_name_the_field(mutate: Any, where: str) -> None:
    doc = tiny()
    mutate(doc)
    with pytest.raises(InvalidCDT) as err:
        parse_cdt(doc, "t.json")
    assert where in str(err.value)
    assert str(err.value).startswith("t.json")


def test_checker_rejects_a_resource_overload() -> None:
    p = parse_cdt(tiny())
    bad = CDTSchedule(
        "tiny",
        "makespan",
        3,
        3,
        5,
        (ScheduledJob("A", "A1", 0, 3), ScheduledJob("B", "Bfast", 0, 1)),
        "x",
        None,
    )
    assert any("cpu" in m for m in check_cdt(p, bad))


def test_outputs_json_csv_and_gantt(tmp_path: Path) -> None:
    s = solve_cdt(parse_cdt(tiny()))
    write_cdt_outputs(s, tmp_path / "s.json", tmp_path / "s.csv")
    doc = json.loads((tmp_path / "s.json").read_text())
    assert doc["objective_value"] == 4
    assert {tuple(sorted(r)) for r in doc["schedule"]} == {("finish", "job_id", "mode_id", "start")}
    rows = list(csv.DictReader(io.StringIO((tmp_path / "s.csv").read_text())))
    assert {r["job_id"] for r in rows} == {"A", "B"}
    png = cdt_gantt(s, tmp_path / "g.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
