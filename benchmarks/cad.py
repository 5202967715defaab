"""CAD benchmark on SmolLM2-135M: known-label controls, and verify's cost vs one EAP-IG run.

    python benchmarks/cad.py [--rows 24] [--ig-steps 5] [--circuit demo/circuit.json] [--json out.json]

Prints one Markdown table with, per control, the verdict, the erasure score E with its CI, the basis
check, the benign-null percentile, the paper's (upstream mechanistic) CAD and its z, then the cost of
verify in units of one EAP-IG edge attribution, all measured in this run:
verify given the base circuit (what a CI job pays once the circuit is cached), the same verify also given
the base reference file (``verify --base-reference``: the base model's accuracies and CAD attributions,
measured once per base model and tasks), verify's default relearning attack timed on its own (the base
model's attack curve, kept in the base reference, and the attack on the checkpoint) and added to both, and
finding the base circuit (paid once per base model and task). ``--circuit`` reuses a circuit JSON (e.g. the one
``circuitforge demo`` writes) when it was found on the same weights and rows; its discovery time is then
not measured here (``demo.json`` records it under ``timings.circuit``).
"""

import argparse
import sys
import tempfile
import time
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from circuitforge.eval import Assessment


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--forget", default="builtin:forget")
    ap.add_argument("--retain", default="builtin:retain")
    ap.add_argument("--rows", type=int, default=24)
    ap.add_argument("--circuit", default=None, help="reuse this base circuit JSON (same weights and rows)")
    ap.add_argument("--ig-steps", type=int, default=5)
    ap.add_argument("--json", default=None)
    ap.add_argument("--verify-only", action="store_true", help="skip the controls table: time verify only")
    a = ap.parse_args()
    torch.manual_seed(0)

    from circuitforge.attribution import attribute
    from circuitforge.cad import (
        CADSettings,
        cad,
        late_ascent,
        subject_erasure,
        suppression_edit,
        unchanged_copy,
    )
    from circuitforge.circuits import Circuit, minimal_circuit
    from circuitforge.data import load_task
    from circuitforge.models import load

    base = load(a.model)
    forget, retain = load_task(a.forget), load_task(a.retain)
    task = forget.head(a.rows)
    same_domain = forget.subset(range(a.rows, min(len(forget), 2 * a.rows)), "forget[untargeted]")
    s = CADSettings(method="eap-ig", ig_steps=a.ig_steps)

    t0 = time.perf_counter()
    attribute(base, task, method="eap-ig", level="edge", ig_steps=a.ig_steps)
    t_attr = time.perf_counter() - t0

    circuit = Circuit.from_json(a.circuit) if a.circuit else None
    if circuit is not None and not circuit.found_on(base, task):
        raise SystemExit(f"{a.circuit}: found on other weights or rows than --model/--rows; drop --circuit")
    t_circ = None
    if circuit is None:
        t0 = time.perf_counter()
        circuit = minimal_circuit(base, task, faithfulness=0.8, method="eap-ig", ig_steps=a.ig_steps, baselines=False)
        t_circ = time.perf_counter() - t0
    print(f"base circuit: {len(circuit.edges)} edges, {len(circuit.nodes)} nodes, faithfulness "
          f"{circuit.faithfulness:.3f} (reached: {circuit.reached})"
          + (f" found in {t_circ:.1f} s" if t_circ is not None else f" (reused {a.circuit})"))
    controls = {
        "unchanged": lambda: unchanged_copy(base),
        "readout edit (suppression)": lambda: suppression_edit(base, task),
        "last-3-layer ascent (suppression)": lambda: late_ascent(base, task, layers=3, lr=1e-5, max_steps=40, retain=same_domain),
        "subject erasure (erasure)": lambda: subject_erasure(base, task),
    }
    rows = []
    results = {}
    for name, build in ({} if a.verify_only else controls).items():
        m = build()
        t0 = time.perf_counter()
        r = cad(base, m, task, circuit=circuit, settings=s, retain=same_domain)
        results[name] = r
        e = r.evidence
        rows.append((name, r.verdict, r.score, e["erasure_score_ci"], e["basis"], e["benign_percentile"], r.value, r.z,
                     time.perf_counter() - t0))
    print("\n| control | verdict | E | E 95% CI | basis | benign pct | paper CAD | z | seconds |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n, v, sc, ci, b, p, cv, cz, sec in rows:
        print(f"| {n} | {v} | {sc:.3f} | [{ci[0]:.3f}, {ci[1]:.3f}] | {b:.2f} | {p:.2f} | {cv:.3f} | {cz:.1f} | {sec:.0f} |")

    edited = controls["readout edit (suppression)"]()
    import circuitforge.cad.api as cad_api
    from circuitforge.eval import BaseReference, assess

    cad_api._BASE_SCORES.clear()   # cold: nothing about the base model known but its circuit
    t0 = time.perf_counter()
    cold = assess(base, edited, forget, retain, cad_settings=s, cad_rows=a.rows, circuit=circuit)
    t_verify = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as d:   # warm: a CI job that also kept the base reference file
        cold.reference().to_json(f"{d}/ref.json")
        cad_api._BASE_SCORES.clear()
        t0 = time.perf_counter()
        warm = assess(base, edited, forget, retain, cad_settings=s, cad_rows=a.rows, circuit=circuit,
                      base_reference=BaseReference.from_json(f"{d}/ref.json"))
        t_warm = time.perf_counter() - t0
    same = warm.scorecard.to_dict()["properties"] == cold.scorecard.to_dict()["properties"]
    # verify's default relearning attack (on since the attack became the default gate), timed on its own:
    # cold = the base model's attack curve computed too; warm = that curve read from the base reference
    from circuitforge.eval.relearn import RelearnSettings, base_curve, relearning_attack, split_by_fact

    rl_set = RelearnSettings()
    train, held = split_by_fact(forget)
    t0 = time.perf_counter()
    curve = base_curve(base, train, held, rl_set)
    t_curve = time.perf_counter() - t0
    t0 = time.perf_counter()
    rl = relearning_attack(None, edited, train, held, rl_set, base_attacked=curve)
    t_attack = time.perf_counter() - t0
    t0 = time.perf_counter()
    attribute(base, task, method="eap-ig", level="edge", ig_steps=a.ig_steps)
    t_attr = (t_attr + time.perf_counter() - t0) / 2   # the unit: attributions just before and after

    def phases(x: "Assessment", total: float) -> dict[str, float]:
        c = x.cad
        return {"cad": c.seconds, **{f"cad_{k}": v for k, v in c.timings.items()},
                "accuracies_and_quantization": total - c.seconds}

    ph_cold, ph_warm = phases(cold, t_verify), phases(warm, t_warm)
    print("verify phases, cold (s): " + ", ".join(f"{k} {v:.1f}" for k, v in ph_cold.items()))
    print("verify phases, base reference read (s): " + ", ".join(f"{k} {v:.1f}" for k, v in ph_warm.items()))
    print(f"\none EAP-IG({a.ig_steps}) edge attribution on {a.rows} rows: {t_attr:.1f} s")
    print(f"full verify given the base circuit (suppression control): {t_verify:.1f} s = {t_verify / t_attr:.1f}x attribution")
    print(f"full verify given the base circuit and the base reference file: {t_warm:.1f} s = "
          f"{t_warm / t_attr:.1f}x attribution (same properties as the cold run: {same})")
    print(f"relearning attack (verify's default; recovery {rl.recovery}): base curve {t_curve:.1f} s + attack on the "
          f"checkpoint {t_attack:.1f} s")
    print(f"default verify (with the attack) given the base circuit: {t_verify + t_curve + t_attack:.1f} s = "
          f"{(t_verify + t_curve + t_attack) / t_attr:.1f}x attribution; with the base reference file: "
          f"{t_warm + t_attack:.1f} s = {(t_warm + t_attack) / t_attr:.1f}x")
    if t_circ is not None:
        print(f"finding the base circuit (once per base model and task): {t_circ:.1f} s = {t_circ / t_attr:.1f}x attribution")
    if a.json:
        from circuitforge._provenance import run_info, write_json_atomic

        write_json_atomic(a.json, {
            "controls": {k: v.summary() for k, v in results.items()}, "command": "python " + " ".join(sys.argv),
            "run_info": run_info(), "verify_seconds_given_circuit": t_verify, "circuit_seconds": t_circ,
            "attribution_seconds": t_attr, "circuit_edges": len(circuit.edges),
            "verify_over_attribution": t_verify / t_attr, "verify_timings": ph_cold,
            "verify_seconds_given_circuit_and_base_reference": t_warm,
            "verify_with_base_reference_over_attribution": t_warm / t_attr, "verify_timings_with_base_reference": ph_warm,
            "base_reference_reproduces_properties": same,
            "relearn_base_curve_seconds": t_curve, "relearn_attack_seconds": t_attack, "relearn_recovery": rl.recovery,
            "default_verify_over_attribution": (t_verify + t_curve + t_attack) / t_attr,
            "default_verify_with_base_reference_over_attribution": (t_warm + t_attack) / t_attr,
            "rows": {"forget": len(forget), "retain": len(retain), "cad": a.rows}})

if __name__ == "__main__":
    main()
