"""The federation model: validation with field paths, units, links, projects."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from federation import (
    Federation,
    InvalidFederation,
    InvalidInput,
    jurisdiction_allows,
    load_demo_federation,
    load_federation,
)
from federation.model import demo_federation_path


def minimal() -> dict[str, Any]:
    site = {
        "kind": "hpc",
        "cores": 64,
        "memory": "256 GB",
        "power_idle_w": 2,
        "power_busy_w": 8,
        "price_per_core_hour": 0.02,
        "jurisdiction": "FR",
        "buffer_capacity": "1 TB",
    }
    return {
        "name": "t",
        "sites": [{"id": "a", **site}, {"id": "b", **site, "jurisdiction": "DE"}],
        "links": [{"src": "a", "dst": "b", "bandwidth": "1 Gbit/s", "latency": "10 ms"}],
    }


def problems_of(data: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(InvalidFederation) as info:
        Federation.from_dict(data, "fed.yaml")
    assert info.value.source == "fed.yaml"
    return [(p.location, p.message) for p in info.value.problems]


def test_units_are_converted_to_si() -> None:
    fed = Federation.from_dict(minimal())
    a = fed.site("a")
    assert a.memory == 256e9
    assert a.buffer_capacity == 1e12
    link = fed.link("a", "b")
    assert link is not None
    assert link.bandwidth == pytest.approx(125e6)
    assert link.latency == pytest.approx(0.010)
    assert fed.link("b", "a") is None


def test_transfer_time_and_cost() -> None:
    data = minimal()
    data["links"][0]["cost_per_gb"] = 0.09
    fed = Federation.from_dict(data)
    assert fed.transfer_time("a", "b", 125e6) == pytest.approx(1.010)
    assert fed.transfer_time("a", "a", 1e12) == 0.0
    assert math.isinf(fed.transfer_time("b", "a", 1.0))
    assert fed.transfer_cost("a", "b", 2e9) == pytest.approx(0.18)


def test_symmetric_link_expands_to_two_directed_links() -> None:
    data = minimal()
    data["links"][0]["symmetric"] = True
    fed = Federation.from_dict(data)
    assert len(fed.links) == 2
    back = fed.link("b", "a")
    assert back is not None
    assert back.bandwidth == pytest.approx(125e6)


def test_duplicate_site_ids_are_named() -> None:
    data = minimal()
    data["sites"][1]["id"] = "a"
    probs = problems_of(data)
    assert ("sites[1].id", "duplicate site id 'a' (also sites[0])") in probs


def test_link_to_unknown_site_names_the_field() -> None:
    data = minimal()
    data["links"][0]["dst"] = "nowhere"
    locations = [loc for loc, _ in problems_of(data)]
    assert locations == ["links[0].dst"]


def test_non_positive_capacity_names_the_field_path() -> None:
    data = minimal()
    data["sites"][1]["cores"] = 0
    (loc, msg), *_ = problems_of(data)
    assert loc == "sites[1].cores"
    assert "greater than 0" in msg


def test_bad_jurisdiction_is_rejected() -> None:
    data = minimal()
    data["sites"][0]["jurisdiction"] = "France"
    (loc, msg), *_ = problems_of(data)
    assert loc == "sites[0].jurisdiction"
    assert "ISO 3166-1" in msg


def test_lowercase_jurisdiction_is_normalised() -> None:
    data = minimal()
    data["sites"][0]["jurisdiction"] = "fr"
    assert Federation.from_dict(data).site("a").jurisdiction == "FR"


def test_unknown_field_is_rejected() -> None:
    data = minimal()
    data["sites"][0]["corez"] = 3
    assert ("sites[0].corez", "Extra inputs are not permitted") in problems_of(data)


def test_busy_power_below_idle_is_rejected() -> None:
    data = minimal()
    data["sites"][0]["power_busy_w"] = 1
    (loc, msg), *_ = problems_of(data)
    assert loc == "sites[0]"
    assert "power_busy_w" in msg


def test_self_link_and_duplicate_link() -> None:
    data = minimal()
    data["links"].append({"src": "a", "dst": "a", "bandwidth": 1})
    assert problems_of(data)[0][0] == "links[1]"
    data = minimal()
    data["links"].append(copy.deepcopy(data["links"][0]))
    assert problems_of(data)[0] == ("links[1]", "duplicate link a -> b (also links[0])")


def test_bad_unit_string_is_explained() -> None:
    data = minimal()
    data["sites"][0]["memory"] = "lots"
    (loc, msg), *_ = problems_of(data)
    assert loc == "sites[0].memory"
    assert "396 GB" in msg


def test_projects_reference_known_sites() -> None:
    data = minimal()
    data["organisations"] = [
        {"id": "o", "projects": [{"id": "p", "sites": ["a"]}, {"id": "q", "sites": ["zz"]}]}
    ]
    assert problems_of(data) == [("organisations[0].projects[1].sites[0]", "unknown site 'zz'")]
    data["organisations"][0]["projects"].pop()
    fed = Federation.from_dict(data)
    assert [s.id for s in fed.sites_for_project("p")] == ["a"]


def test_not_a_mapping() -> None:
    with pytest.raises(InvalidFederation, match="a federation is a mapping"):
        Federation.from_dict([1, 2], "x.yaml")


def test_round_trip_through_dict_is_lossless() -> None:
    fed = load_demo_federation()
    again = Federation.from_dict(fed.to_dict())
    assert again == fed


def test_loader_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    data = minimal()
    data["sites"][0]["pue"] = 0.5
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(InvalidFederation) as info:
        load_federation(bad)
    assert str(info.value).startswith(f"{bad}: sites[0].pue: ")
    broken = tmp_path / "broken.yaml"
    broken.write_text("sites: [\n  - id: a\n   bad")
    with pytest.raises(InvalidInput, match=r"broken\.yaml: line \d+, column \d+: invalid YAML"):
        load_federation(broken)
    with pytest.raises(InvalidInput, match="no such file"):
        load_federation(tmp_path / "missing.yaml")


def test_demo_federation_models_the_named_facilities() -> None:
    fed = load_demo_federation()
    assert 4 <= len(fed.sites) <= 6
    kinds = {s.kind.value for s in fed.sites}
    assert kinds == {"hpc", "cloud", "edge"}
    fat = fed.site("ddf-fatnode")
    assert fat.cores == 120
    assert fat.memory == 396e9
    assert any(s.gpus > 0 for s in fed.sites)
    assert any(s.kind == "cloud" and s.jurisdiction not in ("EU", "FR", "DE") for s in fed.sites)
    bandwidths = {round(lk.bandwidth / 1e6, 1) for lk in fed.links}
    assert {137.9, 28.7} <= bandwidths
    # every pair of sites is connected both ways
    for a in fed.site_ids:
        for b in fed.site_ids:
            assert a == b or fed.link(a, b) is not None, (a, b)


def test_every_demo_number_is_sourced() -> None:
    """Each numeric site/link setting in demo.yaml carries a comment (source or assumption)."""
    text = demo_federation_path().read_text()
    in_sites = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith(("sites:", "links:")):
            in_sites = True
        if stripped.startswith("organisations:"):
            in_sites = False
        if in_sites and ":" in stripped and not stripped.startswith(("#", "- id", "id:", "kind:")):
            value = stripped.split(":", 1)[1].split("#")[0].strip()
            if value and value[0].isdigit():
                assert "#" in line, f"unsourced number in demo.yaml: {line!r}"


def test_jurisdiction_rules() -> None:
    assert jurisdiction_allows(None, "US")
    assert jurisdiction_allows(["FR"], "FR")
    assert not jurisdiction_allows(["FR"], "DE")
    assert jurisdiction_allows(["EU"], "DE")
    assert not jurisdiction_allows(["EU"], "US")
    assert jurisdiction_allows(["EU"], "EU")
