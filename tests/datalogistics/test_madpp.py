"""maDMP 1.2 plans: official examples, JSON-path errors, the orchestration extension."""

from __future__ import annotations

import copy
import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from datalogistics.items import Sensitivity
from datalogistics.madpp import DataLocation, DataProjectPlan, InvalidPlan, madmp_problems
from federation.model import Federation
from tests.conftest import shared_path

EXAMPLES = [
    "ex1-header-fundedProject.json",
    "ex7-dataset-many.json",
    "ex8-dmp-minimal-content.json",
    "ex9-dmp-long.json",
    "ex10-fairsharing.json",
]


def example(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(shared_path("madmp", name).read_text())
    return data


def ddf_plan() -> dict[str, Any]:
    """The minimal example with three datasets carrying the orchestration extension."""
    data = example("ex8-dmp-minimal-content.json")
    base = data["dmp"]["dataset"][0]
    data["dmp"]["dataset"] = [
        {
            **base,
            "title": "LOFAR visibilities",
            "dataset_id": {"identifier": "vis", "type": "other"},
            "personal_data": "no",
            "sensitive_data": "yes",
            "continuum": {
                "allowed_jurisdictions": ["FR"],
                "sensitivity": "restricted",
                "expected_size": "1.2 TB",
                "retention": "30 d",
                "produced_by": ["download"],
                "consumed_by": ["calibrate"],
            },
        },
        {
            **base,
            "title": "Calibration tables",
            "dataset_id": {"identifier": "cal", "type": "other"},
            "continuum": {
                "allowed_jurisdictions": ["EU"],
                "produced_by": ["calibrate"],
                "consumed_by": ["image"],
            },
        },
        {
            **base,
            "title": "Sky images",
            "dataset_id": {"identifier": "10.0/img", "type": "doi"},
            "personal_data": "no",
            "sensitive_data": "no",
            "distribution": [{"title": "archive", "data_access": "open", "byte_size": 5000}],
        },
    ]
    return data


@pytest.mark.parametrize("name", EXAMPLES)
def test_official_examples_validate_and_round_trip(name: str) -> None:
    data = example(name)
    assert madmp_problems(data) == []
    plan = DataProjectPlan.from_json(copy.deepcopy(data), name)
    assert plan.to_json() == data
    assert json.dumps(plan.to_json(), sort_keys=True) == json.dumps(data, sort_keys=True)
    assert len(plan.data_items()) == len(data["dmp"]["dataset"])


def test_broken_plan_names_the_json_path() -> None:
    data = example("ex9-dmp-long.json")
    del data["dmp"]["dataset"][1]["title"]
    data["dmp"]["dataset"][0]["distribution"][0]["byte_size"] = "big"
    with pytest.raises(InvalidPlan) as info:
        DataProjectPlan.from_json(data, "plan.json")
    locations = {p.location for p in info.value.problems}
    assert "dmp.dataset[1]" in locations
    assert "dmp.dataset[0].distribution[0].byte_size" in locations
    assert str(info.value).startswith("plan.json: dmp.dataset")


def test_extension_errors_name_the_json_path() -> None:
    data = ddf_plan()
    data["dmp"]["dataset"][1]["continuum"]["allowed_jurisdictions"] = ["EU", "XX"]
    data["dmp"]["dataset"][0]["continuum"]["colour"] = "blue"
    with pytest.raises(InvalidPlan) as info:
        DataProjectPlan.from_json(data, "plan.json")
    locations = {p.location for p in info.value.problems}
    assert "dmp.dataset[1].continuum.allowed_jurisdictions[1]" in locations
    assert "dmp.dataset[0].continuum.colour" in locations


def test_extension_keeps_the_plan_schema_valid_and_gives_data_items() -> None:
    data = ddf_plan()
    assert madmp_problems(data) == []
    plan = DataProjectPlan.from_json(data)
    items = {i.id: i for i in plan.data_items()}
    assert items["vis"].size == 1.2e12
    assert items["vis"].allowed_jurisdictions == ("FR",)
    assert items["vis"].sensitivity is Sensitivity.RESTRICTED
    assert items["vis"].retention == 30 * 86400
    assert items["cal"].sensitivity is Sensitivity.INTERNAL  # "unknown" in the standard fields
    assert items["10.0/img"].size == 5000  # from the distribution's byte_size
    assert items["10.0/img"].sensitivity is Sensitivity.PUBLIC
    assert items["10.0/img"].allowed_jurisdictions is None


def test_constraints_pin_steps_to_the_allowed_jurisdictions(demo_federation: Federation) -> None:
    plan = DataProjectPlan.from_json(ddf_plan())
    c = plan.to_constraints()
    assert c.items == {"vis": ("FR",), "cal": ("EU",), "10.0/img": None}
    assert c.steps["download"] == ("FR",)
    assert c.steps["calibrate"] == ("FR",)  # FR (vis) and EU (cal): only France
    assert c.steps["image"] == ("EU",)
    assert c.step_allows("calibrate", "FR")
    assert not c.step_allows("calibrate", "DE")
    assert c.step_allows("image", "DE")
    assert c.step_allows("unconstrained-step", "US")
    french = {s.id for s in demo_federation.sites if s.jurisdiction == "FR"}
    eligible = c.eligible_sites(demo_federation)
    assert set(eligible["calibrate"]) == french
    assert json.loads(json.dumps(c.to_json()))["steps"]["calibrate"] == ["FR"]


def test_contradictory_jurisdictions_are_reported() -> None:
    data = ddf_plan()
    data["dmp"]["dataset"][1]["continuum"]["allowed_jurisdictions"] = ["DE"]
    with pytest.raises(InvalidPlan, match="calibrate"):
        DataProjectPlan.from_json(data).to_constraints()


def test_plan_is_updated_after_a_run(tmp_path: Path) -> None:
    plan = DataProjectPlan.from_json(ddf_plan())
    loc = DataLocation(
        site="ddf-fatnode",
        url="http://127.0.0.1:8101/buffers/abc",
        byte_size=1_234_567,
        available_until=date(2027, 1, 31),
        jurisdiction="FR",
    )
    now = datetime(2026, 11, 22, 1, 0, tzinfo=UTC)
    updated = plan.with_locations({"vis": loc}, now=now)
    out = updated.to_json()
    assert madmp_problems(out) == []
    dist = out["dmp"]["dataset"][0]["distribution"]
    assert dist[-1]["byte_size"] == 1_234_567
    assert dist[-1]["host"] == {
        "title": "ddf-fatnode",
        "url": "http://127.0.0.1:8101/buffers/abc",
        "storage_type": "buffer",
        "geo_location": "FR",
    }
    assert dist[-1]["available_until"] == "2027-01-31"
    assert dist[-1]["data_access"] == "closed"  # restricted data
    assert out["dmp"]["modified"] == "2026-11-22T01:00:00Z"
    again = updated.with_locations({"vis": loc}, now=now).to_json()
    assert len(again["dmp"]["dataset"][0]["distribution"]) == 1  # same host: replaced
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(out))
    assert DataProjectPlan.load(path).to_json() == out
    with pytest.raises(KeyError, match="nope"):
        plan.with_locations({"nope": loc})
