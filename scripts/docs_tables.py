"""Result tables in the docs are generated from committed JSON, never typed by hand.

A Markdown file marks a generated table with

    <!-- table: docs/results/attribution_smollm2.json -->
    | … generated … |
    <!-- /table -->

and the JSON holds ``{"table": {"columns": [...], "rows": [[...], ...]}, "command": "...", ...}`` written by
the benchmark that measured it (``<!-- table: PATH#KEY -->`` reads the table under ``KEY`` instead, for a JSON
that holds several). ``python scripts/docs_tables.py`` rewrites every marked table from its JSON
(and the line ``Measured with `…`.`` under it from ``command``); ``--check`` only compares and exits 1 on a
difference (``tests/unit/test_docs_tables.py`` runs the check).
"""

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"(<!-- table: (?P<src>[^ ]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)


def _cell(v: object) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v).replace("|", "\\|")


def render(doc: dict, key: str = "table") -> str:
    """The Markdown of one results JSON: the table under ``key``, then the command that produced it."""
    t = doc[key]
    lines = ["| " + " | ".join(_cell(c) for c in t["columns"]) + " |", "|" + "---|" * len(t["columns"])]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in t["rows"]]
    info = doc.get("run_info", {})
    load = info.get("load_average_1min")
    where = ", ".join(x for x in (f"{info.get('cpu_count')} CPU cores" if info.get("cpu_count") else "",
                                  f"load average {load:.1f} when written" if load is not None else "",
                                  info.get("date", ""), f"commit {str(info['commit'])[:10]}" if info.get("commit") else "")
                      if x)
    lines += ["", f"Measured with `{doc['command']}`" + (f" ({where})" if where else "") + "."]
    return "\n".join(lines) + "\n"


def files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def update(check: bool) -> tuple[list[str], list[str]]:
    """Rewrite (or, with ``check``, compare) every marked table; returns the files that differ and the
    tables whose JSON is missing."""
    stale: list[str] = []
    missing: list[str] = []
    for f in files():
        text = f.read_text()

        def sub(m: re.Match, f: Path = f) -> str:
            path, _, key = m.group("src").partition("#")
            key = key or "table"
            src = ROOT / path
            if not src.is_file():
                missing.append(f"{f.relative_to(ROOT)}: table source {m.group('src')} does not exist")
                return m.group(0)
            doc = json.loads(src.read_text())
            if not isinstance(doc.get(key), dict):
                missing.append(f"{f.relative_to(ROOT)}: {path} has no table under {key!r}")
                return m.group(0)
            return m.group(1) + render(doc, key) + m.group(4)

        new = BLOCK.sub(sub, text)
        if new != text:
            stale.append(str(f.relative_to(ROOT)))
            if not check:
                f.write_text(new)
    return stale, missing


def sources() -> list[tuple[str, str]]:
    """(doc, JSON) for every marked table."""
    return [(str(f.relative_to(ROOT)), m.group("src")) for f in files() for m in BLOCK.finditer(f.read_text())]


if __name__ == "__main__":
    check = "--check" in sys.argv
    stale, missing = update(check)
    for s in stale:
        print(f"{'stale' if check else 'rewrote'}: {s}")
    for s in missing:
        print(f"missing: {s}")
    sys.exit(1 if missing or (check and stale) else 0)
