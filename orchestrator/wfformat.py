"""Loaders for WfCommons WfFormat instances (schema 1.6 and 1.5, and 1.4 and older).

WfFormat records how a workflow ran: per task its runtime on a named machine,
the files it read and wrote with their sizes, its parents and children. A
``Workflow`` needs work in core-seconds at the reference speed, so each
task's work is ``runtime * cores * (machine MHz / reference MHz)`` where the
machine's speed is recorded (``speedInMHz`` in 1.5, ``speed`` in 1.4), and
``runtime * cores`` where it is not. ``cores`` is the task's ``coreCount``
(1.5) or ``cores`` (1.4), 1 when absent.

Version 1.5 splits a workflow into ``specification`` (tasks, files) and
``execution`` (runtimes, machines); 1.4 keeps one list of tasks, each with
its ``files`` (``link: input|output``). In 1.4 a task is identified by its
``name`` (the parents list names), which becomes the step id, so both
versions of the same run give the same step ids.

Version 1.6 (what WfCommons 1.6 writes) keeps 1.5's layout and adds ``metrics`` to
``specification`` (numberOfTasks, numberOfFiles, sumOfFileSizesInBytes, numberOfLevels,
minimumWidth, maximumWidth) and to ``execution`` (sumTaskRuntimesInSeconds,
totalNumBytesRead, totalNumBytesWritten), and a task may name its ``category``. A 1.6
instance is validated against the 1.5 schema with these additions, and each metric it
declares must agree with its tasks and files (as WfCommons' own validator checks): a
truncated or edited instance is refused, naming the metric.

Reference: WfCommons, https://wfcommons.org (Coleman et al., FGCS 2022).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

from pydantic import ValidationError

from datalogistics.items import DataItem, InputLocation
from federation.errors import Problem, format_location, problems_from_pydantic
from orchestrator.errors import InvalidWorkflow
from orchestrator.workflow import Workflow

REFERENCE_MHZ = 1000.0
"""Clock of the reference core (1 GHz): work is in core-seconds of this core."""

_CATEGORY_SUFFIX = re.compile(r"[_-]?(ID)?\d+$")


def is_wfformat(data: Any) -> bool:
    """True when ``data`` looks like a WfFormat instance."""
    return (
        isinstance(data, Mapping)
        and isinstance(data.get("workflow"), Mapping)
        and "schemaVersion" in data
    )


SUPPORTED_VERSIONS = "1.0 to 1.6"

_COUNT = {"type": "integer", "minimum": 0}
_AMOUNT = {"type": "number", "minimum": 0}
_METRICS_16 = {
    "specification": {
        "numberOfTasks": _COUNT,
        "numberOfFiles": _COUNT,
        "sumOfFileSizesInBytes": _COUNT,
        "numberOfLevels": _COUNT,
        "minimumWidth": _COUNT,
        "maximumWidth": _COUNT,
    },
    "execution": {
        "sumTaskRuntimesInSeconds": _AMOUNT,
        "totalNumBytesRead": _AMOUNT,
        "totalNumBytesWritten": _AMOUNT,
    },
}
"""What WfFormat 1.6 adds to 1.5: a ``metrics`` object in each of the two sections."""


@cache
def wfformat_schema(version: str = "1.5") -> dict[str, Any]:
    """The WfFormat JSON schema of ``version`` ("1.5" or "1.6").

    1.5 is the schema shipped with the package (wfcommons/WfFormat, LGPL-3.0); 1.6 is that
    schema with what 1.6 adds (``_METRICS_16``, a task's ``category``) and its version."""
    text = resources.files("orchestrator").joinpath("schemas/wfcommons-schema-1.5.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    if version == "1.5":
        return schema
    if version != "1.6":
        raise ValueError(f"no WfFormat schema for version {version!r} (1.5 or 1.6)")
    schema["properties"]["schemaVersion"]["enum"] = ["1.6"]
    sections = schema["properties"]["workflow"]["properties"]
    for section, fields in _METRICS_16.items():
        sections[section]["properties"]["metrics"] = {
            "description": f"Metrics of the {section} (WfFormat 1.6)",
            "type": "object",
            "properties": dict(fields),
        }
    category = {"description": "Task category", "type": "string", "minLength": 1}
    sections["specification"]["properties"]["tasks"]["items"]["properties"]["category"] = category
    sections["execution"]["properties"]["tasks"]["items"]["properties"]["category"] = category
    return schema


_PROGRAM = re.compile(r"^[\w.+-]+$")


def _category(name: str, task_id: str, command: Any = None) -> str:
    """The kind of task: its program when that is one plain word (``mProject``,
    ``fast2bfq``: what WfFormat 1.4 records as ``category``), else its name
    without the trailing id (``..._ID0000001``, ``..._3``)."""
    if isinstance(command, Mapping):
        program = str(command.get("program") or "").rsplit("/", 1)[-1]
        if program and _PROGRAM.match(program):
            return program
    base = name if name and name != task_id else task_id
    return _CATEGORY_SUFFIX.sub("", base) or base


def _speed_factor(mhz: Any, reference_mhz: float) -> float:
    if isinstance(mhz, int | float) and not isinstance(mhz, bool) and mhz > 0:
        return float(mhz) / reference_mhz
    return 1.0


def _cores(value: Any) -> int:
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 1:
        return round(value)
    return 1


def load_wfformat(
    data: Any, source: str = "<wfformat>", reference_mhz: float = REFERENCE_MHZ
) -> Workflow:
    """Convert a WfFormat instance (1.6, 1.5, or 1.4 and older) into a ``Workflow``.

    Raises:
        InvalidWorkflow: naming ``source`` and the JSON path of each problem.
    """
    if reference_mhz <= 0:
        raise ValueError(f"reference_mhz must be > 0, got {reference_mhz}")
    if not is_wfformat(data):
        raise InvalidWorkflow.single(
            source, "", "not a WfFormat instance: expected 'schemaVersion' and 'workflow' keys"
        )
    version = str(data["schemaVersion"])
    if version in ("1.5", "1.6"):
        native, tasks_path = _from_v15(data, source, reference_mhz, version)
    elif re.fullmatch(r"1\.[0-4]", version):
        native, tasks_path = _from_v14(data, source, reference_mhz)
    else:
        raise InvalidWorkflow.single(
            source,
            "schemaVersion",
            f"unsupported WfFormat version {version!r} ({SUPPORTED_VERSIONS})",
        )
    try:
        return Workflow.from_dict(native, source)
    except InvalidWorkflow as exc:
        problems = [
            Problem(re.sub(r"^steps", tasks_path, p.location), p.message) for p in exc.problems
        ]
        raise InvalidWorkflow(source, problems) from None


def _schema_problems(data: Any, version: str) -> list[Problem]:
    import jsonschema  # here, not at the top: the CLI's `validate` of a native file starts fast

    schema = wfformat_schema(version)
    validator_cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    validator = validator_cls(schema)
    errors = sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    return [Problem(format_location(e.absolute_path), e.message) for e in errors[:20]]


def _from_v15(
    data: Mapping[str, Any], source: str, ref: float, version: str = "1.5"
) -> tuple[dict[str, Any], str]:
    problems = _schema_problems(data, version)
    if problems:
        raise InvalidWorkflow(source, problems)
    wf = data["workflow"]
    spec = wf["specification"]
    execution = wf.get("execution") or {}
    if version == "1.6":
        problems += _metric_problems(spec, execution)
    base = "workflow.specification"
    machines = {m.get("nodeName"): m for m in execution.get("machines", [])}
    records = {t["id"]: t for t in execution.get("tasks", [])}

    items: dict[str, dict[str, Any]] = {}
    for i, f in enumerate(spec.get("files", [])):
        size = f.get("sizeInBytes", 0)
        if not isinstance(size, int | float) or size < 0:
            problems.append(
                Problem(f"{base}.files[{i}].sizeInBytes", f"must be >= 0, got {size!r}")
            )
        elif f["id"] in items:
            problems.append(Problem(f"{base}.files[{i}].id", f"duplicate file id {f['id']!r}"))
        else:
            items[f["id"]] = {"id": f["id"], "size": size}
            if "location" in f:  # continuum's extension: where an external input lives
                try:
                    loc = InputLocation.model_validate(f["location"])
                except ValidationError as exc:
                    for p in problems_from_pydantic(exc.errors()):
                        where = f"{base}.files[{i}].location"
                        problems.append(
                            Problem(f"{where}.{p.location}" if p.location else where, p.message)
                        )
                else:
                    items[f["id"]]["location"] = loc.model_dump(mode="json", exclude_none=True)

    ids = [t["id"] for t in spec["tasks"]]
    known = set(ids)
    problems += _dup_problems(ids, f"{base}.tasks", "id")
    parents = _merged_parents(spec["tasks"], "id")
    steps = []
    for i, t in enumerate(spec["tasks"]):
        where = f"{base}.tasks[{i}]"
        for rel in ("parents", "children"):
            for k, ref_id in enumerate(t.get(rel, [])):
                if ref_id not in known:
                    problems.append(Problem(f"{where}.{rel}[{k}]", f"unknown task {ref_id!r}"))
        for rel in ("inputFiles", "outputFiles"):
            for k, fid in enumerate(t.get(rel, [])):
                if fid not in items:
                    problems.append(
                        Problem(f"{where}.{rel}[{k}]", f"unknown file {fid!r} (not in files)")
                    )
        rec = records.get(t["id"], {})
        cores = _cores(rec.get("coreCount"))
        machine_names = rec.get("machines") or []
        mhz = None
        if machine_names:
            mhz = (machines.get(machine_names[0], {}).get("cpu") or {}).get("speedInMHz")
        runtime = float(rec.get("runtimeInSeconds", 0.0))
        if runtime < 0:
            problems.append(
                Problem(f"workflow.execution.tasks[id={t['id']}].runtimeInSeconds", "must be >= 0")
            )
        steps.append(
            _step(
                t["id"],
                t.get("name", ""),
                cores,
                max(runtime, 0.0) * cores * _speed_factor(mhz, ref),
                rec.get("memoryInBytes"),
                t.get("inputFiles", []),
                t.get("outputFiles", []),
                parents[t["id"]],
                rec.get("priority"),
                rec.get("command"),
                rec.get("category") or t.get("category"),
            )
        )
    if problems:
        raise InvalidWorkflow(source, problems)
    native = {
        "name": str(data.get("name") or "wfformat"),
        "description": str(data.get("description") or ""),
        "steps": steps,
        "data": [DataItem.model_validate(v).model_dump() for v in items.values()],
    }
    return native, f"{base}.tasks"


def _level_widths(tasks: list[Any]) -> list[int]:
    """Tasks per level of the DAG (a root is at level 0, any other task one below its
    deepest parent), WfFormat 1.6's definition; empty when the graph has a cycle."""
    ids = [t["id"] for t in tasks]
    parents = _merged_parents(tasks, "id")
    waiting = {i: len(set(parents[i])) for i in ids}
    children: dict[str, list[str]] = {i: [] for i in ids}
    for child, ps in parents.items():
        for p in set(ps):
            if p in children:
                children[p].append(child)
    level = [i for i in ids if waiting[i] == 0]
    widths, seen = [], 0
    while level:
        widths.append(len(level))
        seen += len(level)
        following = []
        for i in level:
            for c in children[i]:
                waiting[c] -= 1
                if waiting[c] == 0:
                    following.append(c)
        level = following
    return widths if seen == len(ids) else []


def _metric_problems(spec: Mapping[str, Any], execution: Mapping[str, Any]) -> list[Problem]:
    """WfFormat 1.6's declared metrics that disagree with the instance's tasks and files."""
    problems: list[Problem] = []
    tasks, files = spec["tasks"], spec.get("files", [])
    declared = spec.get("metrics") or {}
    widths = _level_widths(tasks) if declared.keys() & {"numberOfLevels", "minimumWidth"} else []
    found: dict[str, float] = {
        "numberOfTasks": len(tasks),
        "numberOfFiles": len(files),
        "sumOfFileSizesInBytes": sum(f.get("sizeInBytes", 0) for f in files),
    }
    if widths:
        found |= {
            "numberOfLevels": len(widths),
            "minimumWidth": min(widths),
            "maximumWidth": max(widths),
        }
    runs = execution.get("tasks", [])
    sections = [
        ("workflow.specification.metrics", declared, found),
        (
            "workflow.execution.metrics",
            execution.get("metrics") or {},
            {
                "sumTaskRuntimesInSeconds": sum(t.get("runtimeInSeconds", 0) for t in runs),
                "totalNumBytesRead": sum(t.get("readBytes", 0) for t in runs),
                "totalNumBytesWritten": sum(t.get("writtenBytes", 0) for t in runs),
            },
        ),
    ]
    for where, said, actual in sections:
        for key, value in actual.items():
            if key in said and not math.isclose(said[key], value, rel_tol=1e-9, abs_tol=1e-9):
                problems.append(
                    Problem(f"{where}.{key}", f"declares {said[key]}, the instance gives {value}")
                )
    return problems


def _merged_parents(tasks: list[Any], key: str) -> dict[str, list[str]]:
    """Parents of each task: its ``parents`` plus every task that lists it as a child."""
    parents: dict[str, list[str]] = {t[key]: list(t.get("parents", [])) for t in tasks}
    for t in tasks:
        for c in t.get("children", []):
            if c in parents and t[key] not in parents[c]:
                parents[c].append(t[key])
    return parents


def _from_v14(data: Mapping[str, Any], source: str, ref: float) -> tuple[dict[str, Any], str]:
    wf = data["workflow"]
    problems: list[Problem] = []
    tasks = wf.get("tasks")
    if not isinstance(tasks, list) or not tasks:
        raise InvalidWorkflow.single(
            source, "workflow.tasks", "a non-empty list of tasks is required"
        )
    machines = {m.get("nodeName"): m for m in wf.get("machines", []) if isinstance(m, Mapping)}
    names = [t.get("name") if isinstance(t, Mapping) else None for t in tasks]
    for i, n in enumerate(names):
        if not isinstance(n, str) or not n:
            problems.append(Problem(f"workflow.tasks[{i}].name", "a task name is required"))
    problems += _dup_problems(names, "workflow.tasks", "name")
    known = {n for n in names if isinstance(n, str)}
    if problems:
        raise InvalidWorkflow(source, problems)
    parents = _merged_parents(tasks, "name")
    items: dict[str, dict[str, Any]] = {}
    steps = []
    for i, t in enumerate(tasks):
        where = f"workflow.tasks[{i}]"
        if not isinstance(t, Mapping):
            continue
        for rel in ("parents", "children"):
            for k, p in enumerate(t.get(rel, [])):
                if p not in known:
                    problems.append(Problem(f"{where}.{rel}[{k}]", f"unknown task {p!r}"))
        inputs, outputs = [], []
        for k, f in enumerate(t.get("files", [])):
            size = f.get("sizeInBytes", f.get("size", 0))
            fname = f.get("name") or f.get("id")
            if not isinstance(size, int | float) or size < 0:
                problems.append(
                    Problem(f"{where}.files[{k}].sizeInBytes", f"must be >= 0, got {size!r}")
                )
                continue
            if not fname:
                problems.append(Problem(f"{where}.files[{k}].name", "a file name is required"))
                continue
            items.setdefault(fname, {"id": fname, "size": size})
            if f.get("link") == "output":
                outputs.append(fname)
            elif f.get("link") == "input":
                inputs.append(fname)
            else:
                problems.append(
                    Problem(
                        f"{where}.files[{k}].link",
                        f"must be 'input' or 'output', got {f.get('link')!r}",
                    )
                )
        runtime = t.get("runtimeInSeconds", t.get("runtime", 0.0))
        if not isinstance(runtime, int | float) or runtime < 0:
            problems.append(Problem(f"{where}.runtimeInSeconds", f"must be >= 0, got {runtime!r}"))
            runtime = 0.0
        cores = _cores(t.get("cores"))
        mhz = (machines.get(t.get("machine"), {}).get("cpu") or {}).get("speed")
        name = str(t.get("name"))
        step = _step(
            name,
            name,
            cores,
            float(runtime) * cores * _speed_factor(mhz, ref),
            t.get("memoryInBytes"),
            inputs,
            outputs,
            parents.get(name, []),
            t.get("priority"),
            t.get("command"),
        )
        if t.get("category"):
            step["category"] = str(t["category"])
        steps.append(step)
    if problems:
        raise InvalidWorkflow(source, problems)
    native = {
        "name": str(data.get("name") or "wfformat"),
        "description": str(data.get("description") or ""),
        "steps": steps,
        "data": list(items.values()),
    }
    return native, "workflow.tasks"


def _dup_problems(values: list[Any], path: str, key: str) -> list[Problem]:
    seen: dict[Any, int] = {}
    out = []
    for i, v in enumerate(values):
        if v in seen:
            out.append(
                Problem(f"{path}[{i}].{key}", f"duplicate task {key} {v!r} (also [{seen[v]}])")
            )
        seen.setdefault(v, i)
    return out


def _step(
    step_id: str,
    name: str,
    cores: int,
    work: float,
    memory: Any,
    inputs: list[str],
    outputs: list[str],
    parents: list[str],
    priority: Any,
    command: Any,
    category: Any = None,
) -> dict[str, Any]:
    step: dict[str, Any] = {
        "id": step_id,
        "name": name,
        "category": str(category) if category else _category(name, step_id, command),
        "cores": cores,
        "work": work,
        "inputs": list(dict.fromkeys(inputs)),
        "outputs": list(dict.fromkeys(o for o in outputs if o not in inputs)),
        "after": list(dict.fromkeys(parents)),
    }
    if isinstance(memory, int | float) and memory > 0:
        step["memory"] = float(memory)
    if isinstance(priority, int | float):
        step["priority"] = int(priority)
    if isinstance(command, Mapping) and command.get("program"):
        args = [str(a) for a in command.get("arguments", [])]
        step["command"] = [str(command["program"]), *args]
    return step
