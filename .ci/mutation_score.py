"""Mutation scores of ``make mutation``, per module, from mutmut's results in ./mutants.

A module's score is killed / (mutants - equivalent): a mutant counts as killed when a test
failed on it (mutmut's "killed") or ran past its time limit ("timeout": the mutation made the
tests loop). Mutants listed in ``.ci/mutation-equivalent.toml`` change no behaviour a test
could see; each entry names the mutant, a line of its diff and why it is equivalent, and an
entry whose mutant is gone, has another diff or is killed is reported as stale (exit 1), so
the list cannot silently excuse a different mutant after the code changed.

Usage: ``python .ci/mutation_score.py [--min PERCENT] [--survivors] MODULE...`` with modules
among ``checker runstore aai buffers``; exits 1 when a module scores below ``--min``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from collections import Counter
from pathlib import Path

MODULES = {
    "checker": "orchestrator/placement/checker.py",
    "runstore": "orchestrator/execution/store.py",
    "aai": "federation/api/aai.py",
    "buffers": "datalogistics/buffers/store.py",
}
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped"}
STATUS.update(dict.fromkeys((36, 24, -24, 152, 255), "timeout"))
EQUIVALENT = Path(__file__).with_name("mutation-equivalent.toml")


def statuses(path: str) -> dict[str, str]:
    """mutant name -> status for the mutants of ``path``."""
    meta = Path("mutants") / (path + ".meta")
    if not meta.exists():
        return {}
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    return {
        k: "not checked" if v is None else STATUS.get(v, "suspicious") for k, v in codes.items()
    }


def diff(name: str, path: str) -> str:
    """mutmut's diff of one mutant (its functions read from ./mutants)."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    return get_diff_for_mutant(name, path=path)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("modules", nargs="*", default=list(MODULES))
    ap.add_argument("--min", type=float, default=85.0, help="lowest acceptable score (percent)")
    ap.add_argument("--survivors", action="store_true", help="print the survivors' diffs")
    args = ap.parse_args(argv)
    listed = tomllib.loads(EQUIVALENT.read_text()).get("equivalent", [])
    ok = True
    print(f"{'module':<34} {'mutants':>7} {'killed':>6} {'equiv.':>6} {'surv.':>5} {'score':>6}")
    for module in args.modules:
        path = MODULES[module]
        status = statuses(path)
        if not status:
            print(f"{path}: no results in ./mutants (run `make mutation MUTATE={module}`)")
            ok = False
            continue
        equivalent = set()
        for entry in listed:
            name = entry["mutant"]
            if not name.startswith(path[:-3].replace("/", ".") + "."):
                continue
            if name not in status or entry["line"] not in diff(name, path):
                print(f"stale entry in {EQUIVALENT.name}: {name} (gone or another mutation)")
                ok = False
            elif status[name] in ("killed", "timeout"):
                print(f"stale entry in {EQUIVALENT.name}: {name} is {status[name]}")
                ok = False
            else:
                equivalent.add(name)
        counts = Counter(s for n, s in status.items() if n not in equivalent)
        killed = counts["killed"] + counts["timeout"]
        total = sum(counts.values())
        score = 100.0 * killed / total if total else 0.0
        print(
            f"{path:<34} {len(status):>7} {killed:>6} {len(equivalent):>6} "
            f"{total - killed:>5} {score:>5.1f}%"
        )
        others = {s: n for s, n in counts.items() if s not in ("killed", "timeout")}
        if others:
            print(f"  not killed: {dict(sorted(others.items()))}")
        if args.survivors:
            for name, s in sorted(status.items()):
                if s not in ("killed", "timeout") and name not in equivalent:
                    print(f"\n# {name}: {s}\n{diff(name, path)}")
        if score < args.min:
            print(f"  {module}: {score:.1f}% is below {args.min:g}%")
            ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
