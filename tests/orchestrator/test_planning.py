"""``orchestrator.planning``: one table of defaults, and what a user declared folded into the
workflow (project sites, data plan rules, input locations), conflicts named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datalogistics.items import InputLocation
from datalogistics.madpp import DataProjectPlan
from federation.errors import InvalidInput
from federation.model import Federation, load_federation
from orchestrator import Workflow, load_workflow
from orchestrator.planning import PLANNING_DEFAULTS, declare, plan_workflow, saved_plan
from tests.conftest import REPO

QUICKSTART = REPO / "examples" / "quickstart"


@pytest.fixture
def fed() -> Federation:
    return load_federation(QUICKSTART / "federation.yaml")


@pytest.fixture
def wf() -> Workflow:
    return load_workflow(QUICKSTART / "workflow.yaml")


def fr_only() -> DataProjectPlan:
    return DataProjectPlan.load(QUICKSTART / "data-plan.json")


def test_every_path_shares_one_table_of_defaults() -> None:
    from federation.api.routers.plans import CompareRequest, PlanRequest

    fields = PlanRequest.model_fields
    assert fields["planner"].default == PLANNING_DEFAULTS.planner == "ilp"
    assert fields["objective"].default == PLANNING_DEFAULTS.objective
    assert fields["time_limit_s"].default == PLANNING_DEFAULTS.time_limit_s
    assert CompareRequest.model_fields["objective"].default == PLANNING_DEFAULTS.objective
    # the CLI's options default to None, meaning "the table's value"
    import inspect

    from federation.cli.exec_cmd import run_workflow
    from federation.cli.plan_cmd import plan

    for command in (plan, run_workflow):
        params = inspect.signature(command).parameters
        assert params["planner"].default is None
        assert params["objective"].default is None
        assert params["time_limit"].default is None


def test_project_sites_and_the_data_plan_fold_into_the_steps(fed: Federation, wf: Workflow) -> None:
    free = plan_workflow(wf, fed, planner="heft")
    assert {a.site for a in free.assignments.values()} == {"de-cloud"}  # fastest, no rule
    survey = declare(wf, fed, project="survey")
    assert all(s.constraints.sites == ("fr-hpc", "de-cloud") for s in survey.steps)
    both = declare(wf, fed, project="survey", data_plan=fr_only())
    assert all(d.allowed_jurisdictions == ("FR",) for d in both.data)
    assert both.item("clean").allowed_jurisdictions == ("FR",)
    assert both.item("clean").retention == 30 * 86400
    plan = plan_workflow(both, fed, planner="heft")
    assert {a.site for a in plan.assignments.values()} == {"fr-hpc"}
    outreach = declare(wf, fed, project="outreach")  # no list: every site
    assert all(s.constraints.sites is None for s in outreach.steps)


def test_declarations_that_leave_nowhere_to_run_are_named(fed: Federation, wf: Workflow) -> None:
    doc = wf.to_dict()
    doc["steps"][0]["constraints"] = {"sites": ["fr-edge"]}
    pinned = type(wf).from_dict(doc)
    with pytest.raises(InvalidInput) as info:
        declare(pinned, fed, project="survey")
    assert info.value.problems[0].location == "steps.clean.constraints.sites"
    assert "project survey may use only fr-hpc, de-cloud" in str(info.value)
    de_only = json.loads((QUICKSTART / "data-plan.json").read_text())
    de_only["dmp"]["dataset"][0]["continuum"]["allowed_jurisdictions"] = ["DE"]
    doc = wf.to_dict()
    doc["data"][0]["allowed_jurisdictions"] = ["FR"]
    with pytest.raises(InvalidInput, match="nowhere is left"):
        declare(type(wf).from_dict(doc), fed, data_plan=DataProjectPlan.from_json(de_only))


def test_input_locations_are_checked_against_the_workflow_and_the_federation(
    fed: Federation,
    wf: Workflow,
) -> None:
    moved = declare(wf, fed, inputs={"observations": InputLocation(site="fr-hpc", path="/d/o")})
    loc = moved.item("observations").location
    assert loc is not None
    assert (loc.site, loc.path) == ("fr-hpc", "/d/o")
    with pytest.raises(InvalidInput, match="produced by a step"):
        declare(wf, fed, inputs={"clean": InputLocation(site="fr-hpc", path="/x")})
    with pytest.raises(InvalidInput, match="unknown site 'mars'"):
        declare(wf, fed, inputs={"observations": InputLocation(site="mars", path="/x")})


def test_a_saved_plan_must_be_one_of_the_workflow(
    fed: Federation, wf: Workflow, tmp_path: Path
) -> None:
    plan = plan_workflow(wf, fed, planner="heft")
    back = saved_plan(json.loads(json.dumps(plan.to_dict())), wf, "plan.json")
    assert {s: a.site for s, a in back.assignments.items()} == {
        s: a.site for s, a in plan.assignments.items()
    }
    doc = plan.to_dict()
    doc["assignments"] = doc["assignments"][:-1]
    with pytest.raises(InvalidInput, match="not one of this workflow: no site for"):
        saved_plan(doc, wf, "plan.json")
