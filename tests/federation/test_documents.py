"""Reading what users name, safely: paths confined by one function, documents within bounds.

Each hostile input of issue 15 gets a clear refusal naming the file (exit 2 on
the command line), fast, without the file's content in the message.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from federation.documents import (
    MAX_DEPTH,
    document_problems,
    read_document,
    read_user_bytes,
    user_path,
)
from federation.errors import InvalidInput
from federation.model import Federation, load_demo_federation
from tests.conftest import call_main as call
from tests.conftest import run_cli as run

BOMB = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


# -- paths -----------------------------------------------------------------------------


def test_user_path_expands_resolves_and_follows_symlinks_before_comparing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "ok.csv").write_text("t,v\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "escape").symlink_to(outside)
    assert user_path("sub/ok.csv", root, [root]) == (root / "sub" / "ok.csv").resolve()
    assert user_path(str(root / "sub" / "ok.csv"), None, [root]).name == "ok.csv"
    home = Path.home().resolve()
    hostile = [
        "../outside/x",
        str(outside / "x"),
        "escape/x",  # a symlink inside the root that leads out
        "sub/../../outside/x",
        "~/" + os.path.relpath(outside / "x", home),  # the attack: ~/../ passed the old check
        "~",
    ]
    for value in hostile:
        with pytest.raises(InvalidInput) as info:
            user_path(value, root, [root], source="scenario", location="f")
        assert "outside" in str(info.value)
        assert str(root) not in str(info.value)  # never names the server's folders
    # without roots (a user's own files on the command line) any path is allowed, resolved
    assert user_path("~/x") == home / "x"
    with pytest.raises(InvalidInput):
        user_path("bad\0name", root, [root])


# -- documents ---------------------------------------------------------------------------


def test_non_regular_files_are_refused_without_reading(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)  # nobody writes to it: opening it for reading would block
    for path in ("/dev/zero", str(fifo), str(tmp_path)):
        with pytest.raises(InvalidInput) as info:
            read_document(path)
        assert info.value.source == path


def test_oversized_documents_are_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"x": "a" * 2000}))
    with pytest.raises(InvalidInput, match="more than the 1000 accepted"):
        read_user_bytes(big, max_bytes=1000)
    with pytest.raises(InvalidInput, match="more than the 1000 accepted"):
        read_document(big, max_bytes=1000)


def test_an_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(BOMB)
    start = time.perf_counter()
    with pytest.raises(InvalidInput, match="aliases are expanded") as info:
        read_document(path)
    assert time.perf_counter() - start < 10  # a billion values were never built
    assert info.value.source == str(path)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("deep.json", "[" * 5000 + "]" * 5000),  # past Python's recursion limit
        ("deep2.json", "[" * 200 + "]" * 200),  # parses, but deeper than any real document
        ("deep.yaml", "x: " + "[" * 5000 + "]" * 5000),
        ("deep2.yaml", "".join("  " * i + "-\n" for i in range(300))),
    ],
)
def test_deep_nesting_is_refused_with_the_file_name(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InvalidInput, match=f"nested deeper than {MAX_DEPTH}") as info:
        read_document(path)
    assert info.value.source == str(path)


@pytest.mark.parametrize(
    ("name", "text", "where"),
    [
        ("w.yaml", "steps:\n  - {id: a, cores: 1, work: .inf}\n", "steps[0].work"),
        ("w2.yaml", "steps:\n  - {id: a, cores: 1, work: -.inf, memory: .nan}\n", "steps[0].work"),
        ("w3.yaml", "steps:\n  - {id: a, cores: 1, work: 1.0e+400}\n", "steps[0].work"),
        ("w.json", '{"steps": [{"id": "a", "cores": 1, "work": Infinity}]}', "steps[0].work"),
        ("w2.json", '{"steps": [{"id": "a", "cores": 1, "work": 1e400}]}', "steps[0].work"),
        ("w3.json", '{"steps": [{"id": "a", "cores": 1, "work": NaN}]}', "steps[0].work"),
        ("w4.json", '{"steps": [{"id": "a", "cores": ' + "9" * 30 + "}]}", "steps[0].cores"),
    ],
)
def test_non_finite_and_overflowing_numbers_are_refused_with_their_path(
    tmp_path: Path, name: str, text: str, where: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InvalidInput) as info:
        read_document(path)
    assert info.value.problems[0].location == where
    assert info.value.source == str(path)


def test_errors_never_quote_the_file(tmp_path: Path) -> None:
    secret = "s3cr3t-" + "x" * 40
    for name, text in (("a.yaml", f"{secret}: [\n"), ("b.json", f'{{"{secret}": }}')):
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(InvalidInput) as info:
            read_document(path)
        assert secret not in str(info.value)


def test_document_problems_walks_without_recursion() -> None:
    deep: list[object] = []
    node = deep
    for _ in range(100_000):
        node.append([])
        node = node[0]  # type: ignore[assignment]
    assert "nested deeper" in document_problems(deep)[0].message
    assert document_problems({"a": [1, 2.5, "x", None, True]}) == []


def test_models_refuse_non_finite_numbers_from_python_too() -> None:
    data = load_demo_federation().to_dict()
    data["sites"][0]["speed"] = float("inf")
    with pytest.raises(InvalidInput) as info:
        Federation.from_dict(data)
    assert info.value.problems[0].location == "sites[0].speed"
    data["sites"][0]["speed"] = 1.0
    data["sites"][0]["memory"] = 10**400  # an int no float can hold
    with pytest.raises(InvalidInput) as info:
        Federation.from_dict(data)
    assert info.value.problems[0].location == "sites[0].memory"


# -- the command line: exit 2 with the file name ---------------------------------------


def test_validate_refuses_hostile_files_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inf = tmp_path / "wf.yaml"
    inf.write_text("steps:\n  - {id: a, cores: 1, memory: 1 GB, work: .inf}\n")
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 5000 + "]" * 5000)
    for path in (inf, deep, Path("/dev/zero")):
        code, _, err = call(capsys, "validate", str(path))
        assert code == 2, (path, err)
        assert str(path) in err
    code, _, err = call(capsys, "validate", str(inf))
    assert "steps[0].work" in err


def test_validate_refuses_an_alias_bomb_in_a_plan_in_seconds(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    # the schema validates every dataset: a billion of them once the aliases are expanded
    path.write_text(BOMB + 'dmp:\n  title: "x"\n  dataset: *i\n')
    start = time.monotonic()
    done = run("validate", str(path), timeout=60)
    assert done.returncode == 2, done.stderr
    assert str(path) in done.stderr
    assert time.monotonic() - start < 60


@pytest.mark.parametrize("option", ["--deadline=inf", "--budget=Infinity", "--time-limit=1e400"])
def test_non_finite_numbers_on_the_command_line_exit_2(
    capsys: pytest.CaptureFixture[str], examples_dir: Path, option: str
) -> None:
    workflow = examples_dir / "workflows" / "ddf-pipeline.yaml"
    code, _, err = call(capsys, "plan", str(workflow), "--planner", "heft", option)
    assert code == 2, err
    assert option.split("=")[0] in err
