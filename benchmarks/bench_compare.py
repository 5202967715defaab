"""One method's benchmark cells in two results folders, paired split by split (e.g. a MANSU setting against the
defaults on the same splits).

    python benchmarks/bench_compare.py --a docs/results/unlearning-mansu-recalled --b docs/results/unlearning \
        [--method mansu] [--method-b graddiff] [--json PATH]

Both folders must hold cells of the same model and the same splits (the split identities are checked; the
same-domain rows a method was given, ``retain_train``, may differ: they are not scored). ``--method-b``
compares another method's cells in ``--b`` (default: the same method). Prints,
for the splits both finished, the paired differences a − b of forget, retain, same-domain retain and targeted
paraphrase accuracy and of the PTQ gap, each with its two-level bootstrap 95% CI (splits, then rows;
``circuitforge.eval.bench_summary.compare``), and each split's own numbers, relearning recovery included. The
JSON's ``table`` (the paired differences) is what the docs show (``scripts/docs_tables.py``).

``--drop-counterfactual-rows --config CONFIG`` (the config that made the splits): also compare same-domain
accuracy on the scored same-domain rows that are *not* a counterfactual subject of the split's forget rows
(``corrupt_prompt``), the rows MANSU's ``protect_counterfactuals`` cannot have protected directly (the splits
are rebuilt from the config and checked against the cells' split identities).
"""

import argparse
import glob
import json
import os
import shlex
import sys
from typing import Any

import numpy as np


def cells(folder: str, method: str) -> dict[str, dict[str, Any]]:
    """The first-seed cell of ``method`` per split in ``folder``'s cells/."""
    out: dict[str, dict[str, Any]] = {}
    for p in sorted(glob.glob(os.path.join(folder, "cells", f"{method}-*.json"))):
        with open(p) as f:
            c = json.load(f)
        if c["method"] == method and (c["split"] not in out or c["seed"] < out[c["split"]]["seed"]):
            out[c["split"]] = c
    return out


def not_counterfactual_rows(config: str, cells_by_split: dict[str, dict[str, Any]]) -> dict[str, list[int]]:
    """Per split, the indices of the scored same-domain rows whose prompt is no forget row's ``corrupt_prompt``
    (the splits rebuilt from ``config``; a split whose identity differs from its cell's is refused)."""
    from circuitforge.data.splits import scored_identity
    from circuitforge.eval.bench import BenchConfig, make_splits

    _, splits = make_splits(BenchConfig.from_toml(config))
    by_name = {sp.name: sp for sp in splits}
    out = {}
    for name, cell in cells_by_split.items():
        sp = by_name.get(name)
        if sp is None or scored_identity(sp.identity()) != scored_identity(cell["split_identity"]):
            sys.exit(f"{name}: {config} does not rebuild the split its cells were made on")
        cps = {getattr(it, "corrupt_prompt", None) for it in sp.forget.items}
        out[name] = [i for i, it in enumerate(sp.retain_same.items) if getattr(it, "prompt", None) not in cps]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", required=True)
    ap.add_argument("--b", required=True)
    ap.add_argument("--method", default="mansu")
    ap.add_argument("--method-b", default=None, help="the method of --b's cells (default: --method)")
    ap.add_argument("--label", default="a − b", help="the table's name for the difference")
    ap.add_argument("--scheme", default="nf4")
    ap.add_argument("--json", default=None)
    ap.add_argument("--drop-counterfactual-rows", action="store_true",
                    help="also compare same-domain accuracy without the forget rows' counterfactual subjects")
    ap.add_argument("--config", default=None, help="the benchmark config that made the splits (for --drop-counterfactual-rows)")
    args = ap.parse_args()
    if args.drop_counterfactual_rows and not args.config:
        sys.exit("--drop-counterfactual-rows needs --config (the benchmark config that made the splits)")

    from circuitforge.data.splits import scored_identity
    from circuitforge.eval.bench_summary import compare

    method_b = args.method_b or args.method
    ca, cb = cells(args.a, args.method), cells(args.b, method_b)
    common = sorted(set(ca) & set(cb))
    if not common:
        sys.exit(f"no split has a {args.method} cell in {args.a} and a {method_b} cell in {args.b}")

    for s in common:
        if scored_identity(ca[s]["split_identity"]) != scored_identity(cb[s]["split_identity"]):
            sys.exit(f"{s}: the two folders' splits differ (split identities do not match)")
    diff = compare([ca[s] for s in common], [cb[s] for s in common], args.scheme)
    kept: dict[str, list[int]] = {}

    def without_counterfactuals(c: dict[str, Any]) -> dict[str, Any]:
        """``c`` with its same-domain outcomes cut to the rows of ``kept`` for its split."""
        return {**c, "correct": {**c["correct"], "retain_same": [c["correct"]["retain_same"][i] for i in kept[c["split"]]]}}

    if args.drop_counterfactual_rows:
        kept = not_counterfactual_rows(args.config, {s: ca[s] for s in common})
        diff["same-domain retain acc, counterfactual subjects left out"] = compare(
            [without_counterfactuals(ca[s]) for s in common], [without_counterfactuals(cb[s]) for s in common],
            args.scheme)["same-domain retain acc"]

    def acc(c: dict[str, Any], k: str) -> float:
        return float(np.mean(c["correct"][k]))

    per = []
    for s in common:
        row: dict[str, Any] = {"split": s}
        for tag, c in (("a", ca[s]), ("b", cb[s])):
            row[tag] = {"forget": acc(c, "forget"), f"forget_{args.scheme}": acc(c, f"forget_{args.scheme}"),
                        "retain": acc(c, "retain"), "retain_same": acc(c, "retain_same"),
                        "paraphrase": acc(c, "paraphrase"), "relearn_recovery": c["relearn"]["recovery"],
                        "cad_verdict": c["scorecard"]["cad"].get("verdict"),
                        "changed_share": c.get("changed_share"), "unlearn_seconds": c.get("unlearn_seconds"),
                        "stop_reason": c.get("stop_reason")}
            if kept:
                row[tag]["retain_same_not_counterfactual"] = acc(without_counterfactuals(c), "retain_same")
        if kept:
            row["n_retain_same_not_counterfactual"] = len(kept[s])
        per.append(row)
    print(f"a = {args.method} in {args.a}, b = {method_b} in {args.b}; splits {', '.join(common)}")
    rows = [[k, f"{v['value']:+.3f} [{v['lo']:+.3f}, {v['hi']:+.3f}]"] for k, v in diff.items()
            if isinstance(v, dict) and "value" in v]
    table = {"columns": [args.label, f"mean difference [95% CI], {len(common)} splits paired"], "rows": rows}
    print("| quantity (a − b) | mean difference [95% CI] |\n|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |")
    print("\n| split | forget fp / NF4 (a; b) | same-domain (a; b) | paraphrase (a; b) | relearn (a; b) | verdict (a; b) |")
    print("|---|---|---|---|---|---|")
    for r in per:
        a, b = r["a"], r["b"]
        q = f"forget_{args.scheme}"
        print(f"| {r['split']} | {a['forget']:.3f} / {a[q]:.3f}; {b['forget']:.3f} / {b[q]:.3f} | "
              f"{a['retain_same']:.3f}; {b['retain_same']:.3f} | {a['paraphrase']:.3f}; {b['paraphrase']:.3f} | "
              f"{a['relearn_recovery']:.2f}; {b['relearn_recovery']:.2f} | {a['cad_verdict']}; {b['cad_verdict']} |")
    if args.json:
        from circuitforge._provenance import run_info, write_json_atomic

        write_json_atomic(args.json, {"command": "python " + shlex.join(sys.argv), "run_info": run_info(),
                                      "method": args.method,
                                      "method_b": method_b, "a": args.a, "b": args.b, "splits": common,
                                      "paired": diff, "per_split": per, "table": table})


if __name__ == "__main__":
    main()
