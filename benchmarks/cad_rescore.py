"""What the erasure-score change of format ``circuitforge.cad/3`` does to verdicts stored under cad/2.

    python benchmarks/cad_rescore.py [--json docs/results/cad_rescore.json]

cad/2 averaged the erasure score E over hybrid layers ``L = 1..n``; cad/3 leaves out ``L = n``
(:mod:`circuitforge.cad.recovery`) and the verdict's E_MIN went 0.18 → 0.12. Stored cells keep the recovery
curves (point estimates per layer) but not the per-example margins, so cad/3's E is recomputed exactly as a
point estimate, and its CI only **approximately**: the stored CI shifted by (E₃ − E₂). The approximate
verdict is then :func:`circuitforge.cad.verdict.decide` with today's thresholds. The approximation is checked
where the exact answer exists: the tiny-facts validation cells, stored under cad/2 at git revision
``--old-rev`` and recomputed exactly under cad/3 in ``docs/results/cad_validation/cells``.

Nothing here replaces a rerun: cells of the SmolLM2 and Gemma 3 benchmarks and of ``cad_smollm2.py``
keep their cad/2 verdicts until recomputed; this script says which of them the change could flip.
"""

import argparse
import glob
import json
import subprocess
from pathlib import Path
from typing import Any

import torch

from circuitforge._provenance import write_json_atomic
from circuitforge.cad.recovery import erasure_score
from circuitforge.cad.verdict import E_MIN, decide

SOURCES = {"smollm2-bench": ("docs/results/unlearning/cells/*.json", ("scorecard", "cad")),
           "gemma3-bench": ("docs/results/unlearning-gemma3-270m/cells/*.json", ("scorecard", "cad")),
           "smollm2-controls": ("docs/results/cad_verdict_smollm2/cells/*.json", ("cad",))}


def rescore(s: dict[str, Any]) -> dict[str, Any]:
    """cad/3's E (exact point estimate), its shifted CI and the approximate verdict, from a cad/2 summary."""
    rr = s.get("hybrid_recovery_retain")
    e3, _ = erasure_score(torch.tensor(s["hybrid_recovery_forget"]), torch.tensor(rr) if rr else None, s["hybrid_layers"])
    d = e3 - s["erasure_score"]
    ci = [s["erasure_score_ci"][0] + d, s["erasure_score_ci"][1] + d]
    v = decide(s["own_forget_ratio"], s["own_forget_ratio_ci"], s["basis"] if rr else None, e3, ci, s["benign_percentile"])
    return {"verdict_cad2": s["verdict"], "e_cad2": s["erasure_score"], "e_cad3": e3, "e_cad3_ci_shifted": ci,
            "verdict_cad3_approx": v.verdict}


def _get(d: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    for k in path:
        d = d[k]
    return d


def check_on_validation(old_rev: str) -> dict[str, Any]:
    """Approximate cad/3 verdicts of the cad/2 validation cells at ``old_rev`` against their exact rerun."""
    names = subprocess.run(["git", "ls-tree", "--name-only", old_rev, "docs/results/cad_validation/cells/"],
                           capture_output=True, text=True, check=True).stdout.split()
    rows = []
    for n in names:
        new = Path(n)
        if not new.exists():
            continue
        old = json.loads(subprocess.run(["git", "show", f"{old_rev}:{n}"], capture_output=True, text=True, check=True).stdout)
        cell = json.loads(new.read_text())
        exact = cell["summary"]
        if old.get("edit") != cell.get("edit"):
            continue  # the model itself changed (e.g. a method under newer defaults): not the same edit
        r = rescore(old["summary"])
        ev = decide(exact["own_forget_ratio"], exact["own_forget_ratio_ci"], exact["basis"], exact["erasure_score"],
                    exact["erasure_score_ci"], exact["benign_percentile"]).verdict
        rows.append({"cell": new.stem, **r, "e_cad3_exact": exact["erasure_score"], "verdict_cad3_exact": ev,
                     "e_cad3_ci_exact": exact["erasure_score_ci"]})
    agree = sum(r["verdict_cad3_approx"] == r["verdict_cad3_exact"] for r in rows)
    err = max((abs(r["e_cad3"] - r["e_cad3_exact"]) for r in rows), default=None)
    return {"old_rev": old_rev, "cells": len(rows), "verdicts_agree": agree, "max_abs_point_error": err,
            "disagreements": [r for r in rows if r["verdict_cad3_approx"] != r["verdict_cad3_exact"]]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default="docs/results/cad_rescore.json")
    ap.add_argument("--old-rev", default="41d9cf0", help="a commit whose validation cells are cad/2")
    a = ap.parse_args()
    out: dict[str, Any] = {"check": check_on_validation(a.old_rev), "sources": {}}
    c = out["check"]
    print(f"check on {c['cells']} tiny-facts validation cells: approximate verdict = exact in {c['verdicts_agree']}, "
          f"max |E₃ point − exact| {c['max_abs_point_error']}")
    for name, (pattern, path) in SOURCES.items():
        stored = {Path(f).stem: _get(json.loads(Path(f).read_text()), path) for f in sorted(glob.glob(pattern))}
        # cells already made under cad/3 (today's E_MIN in their recorded thresholds) need no rescoring
        rows = {k: rescore(s) for k, s in stored.items() if (s.get("thresholds") or {}).get("e_min") != E_MIN}
        flips = {k: f"{r['verdict_cad2']} → {r['verdict_cad3_approx']}" for k, r in rows.items()
                 if r["verdict_cad2"] != r["verdict_cad3_approx"]}
        out["sources"][name] = {"cells": rows, "would_flip": flips}
        print(f"{name}: {len(rows)} cells stored under cad/2 ({len(stored) - len(rows)} already cad/3), "
              f"approximate cad/3 verdict differs in {len(flips)}: {flips}")
    write_json_atomic(Path(a.json), out)


if __name__ == "__main__":
    main()
