"""What one CAD verdict costs, in units of one EAP-IG edge attribution, measured side by side in one run.

    python benchmarks/cad_cost.py [--json docs/results/cad_cost_smollm2.json]

SmolLM2-135M, the settings and rows of ``benchmarks/cad_smollm2.py`` (24 targeted chemistry facts, 24
same-domain retain rows, the general rows for the matched fine-tune null; EAP-IG(3), 2 random-sign and 1
fine-tune benign edits, 8 hybrid layers) and its cached base circuit. Timed in this order, in one process:
one EAP-IG(3) edge attribution on the 24 rows (the unit), then ``cad()`` on the last-3-block ascent
control (first call: the base attribution is computed), then ``cad()`` on the first-3-block ascent control
and on GradDiff (library defaults, every layer edited) against the same base and circuit (the base
attribution reused, as in a benchmark split or a CI job that checks several checkpoints). The ascent
controls edit 3 of 30 blocks, so most of their hybrids are M₀ or M₁ exactly and are not recomputed
(``hybrid_margins(parts=…)``); GradDiff is the cost of an edit that touches every layer. Each call's
seconds per phase (``CADResult.timings``) are printed and kept. The attribution is timed again after each call; each call's
unit is the mean of the attributions just before and after it (this machine is noisy: compare only runs
on a quiet machine, ``load_average_1min`` is recorded).
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.path.insert(0, str(Path(__file__).parent))
    from cad_smollm2 import CAD_ROWS, build
    from surgery import splits

    from circuitforge._provenance import run_info, write_json_atomic
    from circuitforge.attribution import attribute
    from circuitforge.cad import CADSettings, cad
    from circuitforge.circuits import Circuit
    from circuitforge.models import load

    base = load("smollm2-135m")
    sets = splits(32, 32, 32)
    t, same = sets["targets"].head(CAD_ROWS), sets["same_domain"].head(CAD_ROWS)
    circuit = Circuit.from_json("docs/results/cad_verdict_smollm2/base_circuit.json")
    if not circuit.found_on(base, t):
        raise SystemExit("docs/results/cad_verdict_smollm2/base_circuit.json was found on other weights or rows")
    s = CADSettings(ig_steps=3, n_benign=2, hybrid_points=8, n_null=100)
    models = {name: build(name, base, sets) for name in ("late-ascent-3", "early-ascent-3", "graddiff")}

    def attr() -> float:
        t0 = time.perf_counter()
        attribute(base, t, method="eap-ig", level="edge", ig_steps=s.ig_steps)
        return time.perf_counter() - t0

    times = [attr()]
    calls = []
    for name, m in models.items():
        t0 = time.perf_counter()
        r = cad(base, m, t, circuit=circuit, settings=s, retain=same, unrelated=sets["general"])
        calls.append({"model": name, "seconds": time.perf_counter() - t0, "verdict": r.verdict,
                      "timings": r.timings})
        times.append(attr())
    for i, c in enumerate(calls):  # each call against the attributions just before and just after it
        c["unit_seconds"] = (times[i] + times[i + 1]) / 2
        c["ratio"] = c["seconds"] / c["unit_seconds"]
        print(f"{c['model']}: CAD {c['seconds']:.1f} s = {c['ratio']:.1f}x one EAP-IG(3) attribution "
              f"({c['unit_seconds']:.1f} s; {c['verdict']}); phases "
              + ", ".join(f"{k} {v:.1f} s" for k, v in c["timings"].items()))
    print(f"EAP-IG(3) edge attribution on {CAD_ROWS} rows, around the calls: {[round(x, 1) for x in times]} s")
    doc = {"command": "python benchmarks/cad_cost.py" + (f" --json {a.json}" if a.json else ""),
           "run_info": run_info(), "attribution_seconds": times, "calls": calls,
           "settings": {"ig_steps": s.ig_steps, "n_benign": s.n_benign, "n_benign_finetune": s.n_benign_finetune,
                        "hybrid_points": s.hybrid_points, "n_null": s.n_null, "rows": CAD_ROWS}}
    if a.json:
        write_json_atomic(a.json, doc)
    print(json.dumps({c["model"]: round(c["ratio"], 1) for c in calls}))


if __name__ == "__main__":
    main()
