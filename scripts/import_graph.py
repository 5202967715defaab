"""The package's import graph: every ``circuitforge`` import (module level and inside functions), checked
against the pipeline order. Prints violations and exits 1 if any stage imports a later stage, a module
imports another package's private (``_``-prefixed) module or name, or modules import each other in a circle.

    python scripts/import_graph.py          # check; prints the stage-level graph
"""

import ast
import sys
from pathlib import Path

# Pipeline order (docs/design.md). ``quant`` sits before ``surgery``: MANSU's magnitude floor is defined in
# NF4 bins, so surgery needs quant's bin math; quant never needs surgery.
STAGES = ["errors", "_provenance", "models", "data", "attribution", "circuits", "quant", "surgery", "cad", "eval",
          "viz", "cli"]
ROOT = Path(__file__).resolve().parent.parent / "circuitforge"


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(imported module, imported names, line) for every circuitforge import in ``path``."""
    mod = module_name(path)
    pkg = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names if a.name.startswith("circuitforge")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("circuitforge"):
                out.append((target, [a.name for a in node.names], node.lineno))
    return out


def stage(mod: str) -> str | None:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else None


def check() -> list[str]:
    problems: list[str] = []
    graph: dict[str, set[str]] = {}
    files = sorted(ROOT.rglob("*.py"))
    known = {module_name(f) for f in files}
    for f in files:
        src = module_name(f)
        s_src = stage(src)
        for target, names, line in imports(f):
            # ``from circuitforge.x import y`` where y is a submodule counts as importing x.y
            targets = [f"{target}.{n}" for n in names if f"{target}.{n}" in known] or [target]
            for t in targets:
                graph.setdefault(src, set()).add(t)
                s_t = stage(t)
                where = f"{f.relative_to(ROOT.parent)}:{line}"
                if s_src in STAGES and s_t in STAGES and STAGES.index(s_t) > STAGES.index(s_src):
                    problems.append(f"{where}: stage {s_src} imports later stage {s_t} ({t})")
                # a package-private module (``surgery/_common.py``) may be used inside its own package only
                private = [p for p in t.split(".")[2:] if p.startswith("_")] if s_t != s_src else []
                # a private name (``_accumulate``) may not be imported from any other module
                private += [n for n in names if n.startswith("_") and f"{target}.{n}" not in known]
                if private:
                    problems.append(f"{where}: {src} imports private {private} from {t}")
    # circles between modules (a package's __init__ re-exporting its own modules is not a circle)
    def deps(m: str) -> set[str]:
        return {t for t in graph.get(m, set()) if t in known and not (m.endswith(t) or t.startswith(m + "."))}

    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(deps(m)):
            if state.get(t) == 1:
                cyc = stack[stack.index(t):] + [t]
                if not all(c.startswith(cyc[0].rsplit(".", 1)[0]) and "__init__" in c for c in cyc):
                    problems.append("circle: " + " -> ".join(cyc))
            elif state.get(t) is None:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(known):
        if state.get(m) is None:
            visit(m)
    return problems


def stage_graph() -> dict[str, set[str]]:
    g: dict[str, set[str]] = {}
    for f in sorted(ROOT.rglob("*.py")):
        s = stage(module_name(f))
        for t, _, _ in imports(f):
            st = stage(t)
            if s and st and st != s:
                g.setdefault(s, set()).add(st)
    return g


if __name__ == "__main__":
    for s, ts in sorted(stage_graph().items(), key=lambda kv: STAGES.index(kv[0]) if kv[0] in STAGES else 99):
        print(f"{s:12s} -> {', '.join(sorted(ts, key=lambda t: STAGES.index(t) if t in STAGES else 99))}")
    probs = check()
    for p in probs:
        print(p)
    print(f"{len(probs)} problem(s)")
    sys.exit(1 if probs else 0)
