"""CAD benchmark on SmolLM2-135M: the three ground-truth controls, and verify's cost vs one EAP-IG run.

    python benchmarks/cad.py [--rows 32] [--ig-steps 5] [--json out.json]

Prints one Markdown table (copied into docs/cad.md) with, per control, the mechanistic (upstream, base
readout) and behavioural CAD values and z-scores and the verdict, then the separation of erasure and
suppression, then time(full verify) ÷ time(one EAP-IG attribution), all measured in this one run.
"""

import argparse
import json
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--forget", default="builtin:forget")
    ap.add_argument("--retain", default="builtin:retain")
    ap.add_argument("--rows", type=int, default=32)
    ap.add_argument("--ig-steps", type=int, default=5)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    torch.manual_seed(0)

    from circuitforge.attribution import attribute
    from circuitforge.cad import CADSettings, cad, erasure_edit, suppression_edit, unchanged_copy
    from circuitforge.circuits import minimal_circuit
    from circuitforge.data import load_task
    from circuitforge.eval import verify
    from circuitforge.models import load

    base = load(a.model)
    forget, retain = load_task(a.forget), load_task(a.retain)
    task = forget.head(a.rows)
    s = CADSettings(method="eap-ig", ig_steps=a.ig_steps)

    t0 = time.perf_counter()
    attribute(base, task, method="eap-ig", level="edge", ig_steps=a.ig_steps)
    t_attr = time.perf_counter() - t0

    t0 = time.perf_counter()
    circuit = minimal_circuit(base, task, faithfulness=0.8, method="eap-ig", ig_steps=a.ig_steps, baselines=False)
    t_circ = time.perf_counter() - t0
    print(f"base circuit: {len(circuit.edges)} edges, {len(circuit.nodes)} nodes, faithfulness "
          f"{circuit.faithfulness:.3f} (reached: {circuit.reached}) in {t_circ:.1f} s")
    cut = base.n_layers - max(1, round(base.n_layers / 5))
    controls = {
        "unchanged": unchanged_copy(base),
        "suppression": suppression_edit(base, forget),
        "erasure": erasure_edit(base, sorted(circuit.nodes), upstream_of_layer=cut),
    }
    rows = []
    results = {}
    for name, m in controls.items():
        t0 = time.perf_counter()
        r = cad(base, m, task, circuit=circuit, settings=s)
        results[name] = r
        rows.append((name, r.mechanistic_upstream["value"], r.z, r.behavioural["value"], r.behavioural["z"],
                     r.verdict, time.perf_counter() - t0))
    print("\n| control | mechanistic CAD (upstream) | z | behavioural CAD | z | verdict | seconds |")
    print("|---|---|---|---|---|---|---|")
    for n, mv, mz, bv, bz, v, sec in rows:
        print(f"| {n} | {mv:.3f} | {mz:.1f} | {bv:.3f} | {bz:.1f} | {v} | {sec:.0f} |")
    e, sp = results["erasure"], results["suppression"]
    sep = (e.mechanistic_upstream["value"] - sp.mechanistic_upstream["value"]) / max(sp.mechanistic_upstream["null_std"], 1e-12)
    print(f"\nerasure vs suppression separation on the mechanistic CAD: {sep:.1f} null standard deviations")

    t0 = time.perf_counter()
    card, _ = verify(base, controls["suppression"], forget, retain, cad_settings=s, cad_rows=a.rows)
    t_verify = time.perf_counter() - t0
    print(f"\nfull verify (suppression control, incl. finding the base circuit): {t_verify:.1f} s; "
          f"one EAP-IG({a.ig_steps}) edge attribution on {a.rows} rows: {t_attr:.1f} s; "
          f"ratio {t_verify / t_attr:.1f}x")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"controls": {k: v.summary() for k, v in results.items()}, "separation_sd": sep,
                       "verify_seconds": t_verify, "attribution_seconds": t_attr, "circuit_edges": len(circuit.edges)}, f, indent=2)


if __name__ == "__main__":
    main()
