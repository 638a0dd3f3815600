"""A batch of workflows planned together: one workflow whose parts share the federation.

Several workflows submitted at once compete for the same sites; planning them one after
another gives each the whole federation in turn. ``merge_workflows`` makes one workflow
of them (step and item ids prefixed ``<k>.``, so nothing collides) that any planner
places at once; ``split_plan_sites`` reads each part's sites back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from orchestrator.workflow import Workflow


def merge_workflows(workflows: Sequence[Workflow], name: str = "batch") -> Workflow:
    """One workflow holding every step and item of ``workflows``, ids prefixed ``<k>.``."""
    if not workflows:
        raise ValueError("a batch needs at least one workflow")
    steps: list[dict[str, Any]] = []
    data: list[dict[str, Any]] = []
    for k, wf in enumerate(workflows):
        p = f"{k}."
        for d in wf.data:
            data.append({**d.model_dump(exclude_defaults=True), "id": p + d.id, "size": d.size})
        for s in wf.steps:
            doc = s.model_dump(exclude_defaults=True)
            doc["id"] = p + s.id
            doc["inputs"] = [p + i for i in s.inputs]
            doc["outputs"] = [p + o for o in s.outputs]
            doc["after"] = [p + a for a in s.after]
            steps.append(doc)
    return Workflow.from_dict({"name": name, "steps": steps, "data": data})


def split_plan_sites(sites: Mapping[str, str], count: int) -> list[dict[str, str]]:
    """Per part of a batch of ``count`` workflows, step id (unprefixed) -> site."""
    out: list[dict[str, str]] = [{} for _ in range(count)]
    for step, site in sites.items():
        k, _, sid = step.partition(".")
        out[int(k)][sid] = site
    return out
