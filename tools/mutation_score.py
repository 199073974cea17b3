"""The mutation score per module from mutmut's results (``make mutate`` runs it after ``mutmut run``).

mutmut keeps one ``mutants/<file>.meta`` per mutated file (mutant name -> exit code of the tests run against
it). Killed = the tests failed (a mutant that made them hang until the timeout counts as killed: the suite
noticed). Survivors that ``mutation-equivalents.toml`` lists as equivalent (no behaviour change) are left out
of the score; every other survivor is printed with the line it changed, so it can be killed or argued away.

    .venv/bin/python tools/mutation_score.py [--root .] [--survivor-names | --markdown | --names]
                                             [--sample N [--seed S]] [MODULE_PREFIX ...]

``--sample 60`` scores a fixed random sample of 60 mutants per module: run those first
(``mutmut run $(tools/mutation_score.py --names --sample 60)``) for an estimate when a full run takes too long.
"""
from __future__ import annotations

import argparse
import ast
import difflib
import json
import random
import sys
import tomllib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

TARGET = 95.0  # per cent of non-equivalent mutants killed, per module (issue 18)
# mutmut's exit codes (mutmut.__main__.status_by_exit_code); anything else is "suspicious".
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped",
          36: "timeout", 24: "timeout", -24: "timeout", 152: "timeout", 255: "timeout", 37: "killed",
          None: "not checked", -11: "segfault", -9: "segfault"}
DETECTED = {"killed", "timeout", "segfault"}


@dataclass(frozen=True)
class Survivor:
    module: str
    name: str          # mutmut's mutant name, e.g. plugin.units.x_convert__mutmut_42
    function: str      # dotted, readable: plugin.units.convert, cds_hooks.auth.verifier.ClientVerifier.verify
    before: str        # the original line(s) the mutant changed, as ast.unparse prints them
    after: str


def readable_function(mutant_name: str) -> str:
    """``pkg.mod.xǁCls ǁmeth__mutmut_3`` -> ``pkg.mod.Cls.meth``; ``pkg.mod.x_func__mutmut_3`` -> ``pkg.mod.func``."""
    module, _, mangled = mutant_name.rpartition(".")
    mangled = mangled.rsplit("__mutmut_", 1)[0]
    if mangled.startswith("xǁ"):
        return f"{module}.{'.'.join(p for p in mangled[2:].split('ǁ') if p)}"
    return f"{module}.{mangled.removeprefix('x_')}"


def _functions(tree: ast.Module) -> dict[str, ast.FunctionDef | ast.AsyncFunctionDef]:
    return {n.name: n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}


def _body_lines(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    fn = fn.__class__(**{**fn.__dict__, "name": "f"})  # same name, so only the body can differ
    return [line.strip() for line in ast.unparse(fn).splitlines()]


def changed_lines(functions: dict, mutant_name: str) -> tuple[str, str]:
    """The lines the mutant changed, before and after (joined with " / " when several)."""
    mangled = mutant_name.rpartition(".")[2]
    orig = functions.get(mangled.rsplit("__mutmut_", 1)[0] + "__mutmut_orig")
    mutant = functions.get(mangled)
    if orig is None or mutant is None:
        return "?", "?"
    before, after = [], []
    for line in difflib.ndiff(_body_lines(orig), _body_lines(mutant)):
        if line.startswith("- "):
            before.append(line[2:])
        elif line.startswith("+ "):
            after.append(line[2:])
    return " / ".join(before), " / ".join(after)


def load_equivalents(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    entries = tomllib.loads(path.read_text(encoding="utf-8")).get("equivalent", [])
    for i, e in enumerate(entries):
        missing = {"function", "before", "after", "reason"} - set(e)
        if missing:
            raise SystemExit(f"{path}: equivalent[{i}] lacks {', '.join(sorted(missing))}")
    return entries


def is_equivalent(s: Survivor, equivalents: list[dict]) -> bool:
    """Listed by function and changed line; ``after = "*"`` stands for every mutant of an unreachable line."""
    return any(e["function"] == s.function and e["before"] == s.before and e["after"] in ("*", s.after)
               for e in equivalents)


def sample_of(names: list[str], size: int | None, seed: int) -> list[str]:
    """A fixed random sample of a module's mutants (the same names for the same mutants, size and seed)."""
    names = sorted(names)
    return names if size is None or size >= len(names) else sorted(random.Random(seed).sample(names, size))


def collect(root: Path, prefixes: list[str], sample: int | None = None,
            seed: int = 18) -> tuple[dict[str, Counter], list[Survivor]]:
    counts: dict[str, Counter] = {}
    survivors: list[Survivor] = []
    for meta in sorted((root / "mutants").rglob("*.py.meta")):
        source = meta.with_suffix("")  # mutants/plugin/units.py
        module = ".".join(source.relative_to(root / "mutants").with_suffix("").parts).removesuffix(".__init__")
        if prefixes and not any(module.startswith(p) for p in prefixes):
            continue
        results = json.loads(meta.read_text(encoding="utf-8")).get("exit_code_by_key", {})
        results = {name: results[name] for name in sample_of(list(results), sample, seed)}
        if not results:
            continue
        tally = counts.setdefault(module, Counter())
        functions = None
        for name, code in sorted(results.items()):
            status = STATUS.get(code, "suspicious")
            tally[status] += 1
            if status in ("survived", "no tests", "suspicious"):
                functions = functions or _functions(ast.parse(source.read_text(encoding="utf-8")))
                survivors.append(Survivor(module, name, readable_function(name), *changed_lines(functions, name)))
    return counts, survivors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prefixes", nargs="*", help="only modules starting with these (e.g. plugin.units)")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--survivor-names", action="store_true",
                        help="print only the names of the surviving mutants (to retry them with `mutmut run`)")
    parser.add_argument("--markdown", action="store_true", help="print the per-module table as Markdown (for docs)")
    parser.add_argument("--sample", type=int, metavar="N",
                        help="only a fixed random sample of N mutants per module (a quick estimate of the score)")
    parser.add_argument("--seed", type=int, default=18, help="the sample's seed (default 18)")
    parser.add_argument("--names", action="store_true",
                        help="print the names of the (sampled) mutants, to run them with `mutmut run`")
    args = parser.parse_args(argv)
    equivalents = load_equivalents(args.root / "mutation-equivalents.toml")
    if args.names:
        for meta in sorted((args.root / "mutants").rglob("*.py.meta")):
            names = list(json.loads(meta.read_text(encoding="utf-8")).get("exit_code_by_key", {}))
            module = names[0].rsplit(".", 1)[0] if names else ""
            if names and (not args.prefixes or any(module.startswith(p) for p in args.prefixes)):
                print("\n".join(sample_of(names, args.sample, args.seed)))
        return 0
    counts, survivors = collect(args.root, args.prefixes, args.sample, args.seed)
    if args.survivor_names:
        print("\n".join(s.name for s in survivors if not is_equivalent(s, equivalents)))
        return 0
    if not counts:
        print("no mutmut results under mutants/: run `make mutate` first", file=sys.stderr)
        return 1

    equivalent = Counter(s.module for s in survivors if is_equivalent(s, equivalents))
    live = [s for s in survivors if not is_equivalent(s, equivalents)]
    if args.markdown:
        print("| module | mutants | killed | survived | equivalent | not run | score |\n|---|---:|---:|---:|---:|---:|---:|")
        for module, tally in sorted(counts.items()):
            detected = sum(tally[k] for k in DETECTED)
            unrun = tally["not checked"] + tally["skipped"]
            scored = sum(tally.values()) - equivalent[module] - unrun
            score = f"{100.0 * detected / scored:.1f}%" if scored else "—"
            print(f"| `{module}` | {sum(tally.values())} | {detected} | {scored - detected} | {equivalent[module]} "
                  f"| {unrun} | {score} |")
        return 0
    print(f"{'module':40} {'mutants':>7} {'killed':>7} {'surv.':>6} {'equiv.':>6} {'unrun':>6} {'score':>7}")
    total = Counter()
    below = []
    for module, tally in sorted(counts.items()):
        detected = sum(tally[s] for s in DETECTED)
        unrun = tally["not checked"] + tally["skipped"]
        scored = sum(tally.values()) - equivalent[module] - unrun
        score = 100.0 * detected / scored if scored else 0.0
        if score < TARGET or unrun:
            below.append(module + (" (not all run)" if unrun else ""))
        total.update(mutants=sum(tally.values()), detected=detected, equivalent=equivalent[module],
                     unrun=unrun, scored=scored)
        print(f"{module:40} {sum(tally.values()):7} {detected:7} {scored - detected:6} {equivalent[module]:6} "
              f"{unrun:6} {score:6.1f}%")
    overall = 100.0 * total["detected"] / total["scored"] if total["scored"] else 100.0
    print(f"{'all':40} {total['mutants']:7} {total['detected']:7} {total['scored'] - total['detected']:6} "
          f"{total['equivalent']:6} {total['unrun']:6} {overall:6.1f}%")
    print(f"\ntarget {TARGET:g}% of the scored mutants (all but equivalent and unrun) killed per module; "
          f"not met: {', '.join(below) or 'none'}")
    if live:
        print(f"\n{len(live)} surviving mutants (kill them with a test, or list them in mutation-equivalents.toml "
              "with the reason they change nothing):")
        for s in live:
            print(f"  {s.name}\n      - {s.before}\n      + {s.after}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
