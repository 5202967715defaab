"""Pooled benchmark columns of several runs side by side, one row per (results folder, method): the table a doc
shows when it compares benchmark variants (e.g. MANSU with and without same-domain retain rows).

    python benchmarks/bench_table.py --row "label=docs/results/unlearning:mansu" \
        --row "label=docs/results/unlearning-same-retain:mansu" ... --json PATH

Every number is read from the folder's ``results.json`` (the benchmark's own pooling: two-level paired
bootstrap 95% CIs over cells, then rows), nothing is recomputed; the columns are ``benchmarks/families.py``'s,
plus the share of linear weights edited and the number of same-domain rows the methods were given. The JSON
holds ``{"table": {"columns", "rows"}, "command", "runs"}`` for ``scripts/docs_tables.py``.
"""

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _families() -> Any:
    """``benchmarks/families.py`` (its columns and CI formatting); the benchmarks folder is not a package."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import families

    return families


def parse_row(text: str) -> tuple[str, Path, str]:
    """``label=FOLDER:METHOD`` → (label, folder, method); a clear error otherwise."""
    label, eq, rest = text.partition("=")
    folder, colon, method = rest.rpartition(":")
    if not eq or not colon or not label or not folder or not method:
        raise SystemExit(f"--row {text!r}: expected label=FOLDER:METHOD")
    return label, Path(folder), method


def table(rows: list[tuple[str, Path, str]]) -> dict[str, Any]:
    fam = _families()
    head = ["run", "cells", "same-domain rows given", *(name for _, name in fam.COLUMNS), "share edited"]
    out = []
    for label, folder, method in rows:
        res = folder / "results.json"
        if not res.is_file():
            raise SystemExit(f"{res}: no results (run the benchmark first)")
        d = json.loads(res.read_text())
        t = d["table"].get(method)
        if t is None:
            raise SystemExit(f"{res}: no {method} cells")
        cols = t["columns"]
        out.append([label, t["n_cells"], d["config"].get("n_retain_same_train", 0),
                    *(fam._ci(cols.get(k, {})) for k, _ in fam.COLUMNS), fam._ci(cols.get("changed_share", {}))])
    return {"columns": head, "rows": out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--row", action="append", required=True, help="label=FOLDER:METHOD (repeatable)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    rows = [parse_row(r) for r in a.row]
    t = table(rows)
    print("| " + " | ".join(t["columns"]) + " |")
    for r in t["rows"]:
        print("| " + " | ".join(str(x) for x in r) + " |")
    if a.json:
        from circuitforge._provenance import run_info, write_json_atomic

        write_json_atomic(Path(a.json), {"command": "python " + shlex.join(sys.argv), "run_info": run_info(),
                                         "runs": [{"label": lb, "results": str(f), "method": m} for lb, f, m in rows],
                                         "table": t})


if __name__ == "__main__":
    main()
