"""MANSU's wall time against GradDiff's on the same rows, side by side (issue 16: MANSU ≤ 2× GradDiff).

    python benchmarks/mansu_cost.py [--config benchmarks/unlearning.toml] [--results docs/results/unlearning]
        [--splits 0 1] [--threads 1] [--json PATH]
    python benchmarks/mansu_cost.py --retable PATH [PATH ...]   # rewrite the stored JSONs' table only

For each benchmark split (its forget rows, the general retain rows, the benchmark's own settings: GradDiff at
the learning rate its sweep chose, MANSU at its defaults, circuit search included) runs GradDiff and MANSU on
one base model, the order swapped every other split (a noisy machine slows all alike), and prints each
method's wall seconds, the ratio, MANSU's seconds per phase (``diagnostics["seconds"]``), the stop reasons
and the forget accuracies reached. ``--threads``: torch threads (1 leaves a core to a background job and
makes the ratio less sensitive to it). The JSON's ``table`` is the one docs/surgery.md shows
(``scripts/docs_tables.py``). Each method gets the retain rows the benchmark gives it (``method_retain``: the
general rows, plus the split's same-domain ``retain_train`` rows when the config asks for them).
"""

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

PHASE_NAMES = {"gradients_and_ranking": "gradients and ranking", "stop_rule_eval": "stop-rule evaluations (fp + NF4)",
               "circuit": "circuit", "setup": "setup (fake-NF4 copy)", "final_checks": "final checks",
               "retain_fisher": "Fisher", "retain_nll_check": "retain-NLL check"}


def table(rows: list[dict[str, Any]], top: int = 3) -> dict[str, Any]:
    """Per split: both wall times, the ratio, MANSU's iterations and its ``top`` largest phases."""
    out = []
    for r in rows:
        ph = sorted((r["mansu"].get("phases") or {}).items(), key=lambda x: -x[1])[:top]
        out.append([r["split"], round(r["graddiff"]["seconds"], 1), round(r["mansu"]["seconds"], 1),
                    f"**{r['ratio']:.2f}**", r["mansu"]["steps"],
                    ", ".join(f"{PHASE_NAMES.get(k, k.replace('_', ' '))} {v:.1f}" for k, v in ph)])
    return {"columns": ["split", "GradDiff s", "MANSU s", "ratio", "MANSU iterations", "MANSU's largest phases (s)"],
            "rows": out}


def retable(paths: list[str]) -> None:
    from circuitforge._provenance import write_json_atomic

    for p in paths:
        doc = json.loads(Path(p).read_text())
        write_json_atomic(Path(p), {**doc, "table": table(doc["splits"])})
        print(f"{p}: table rewritten")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--retable", nargs="+", default=None, help="rewrite the table of these stored JSONs and stop")
    ap.add_argument("--config", default="benchmarks/unlearning.toml")
    ap.add_argument("--results", default="docs/results/unlearning", help="the bench's results folder (its sweep.json)")
    ap.add_argument("--splits", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    if a.retable:
        return retable(a.retable)

    import torch

    from circuitforge._provenance import run_info, write_json_atomic
    from circuitforge.data import load_task
    from circuitforge.eval.bench import BenchConfig, make_splits, method_retain, method_settings
    from circuitforge.models import load
    from circuitforge.surgery import unlearn

    torch.set_num_threads(a.threads)
    cfg = BenchConfig.from_toml(a.config)
    sweep_path = Path(a.results) / "sweep.json"
    if not sweep_path.is_file():
        raise SystemExit(f"{sweep_path}: no sweep results (run the benchmark first, or pass --results)")
    sweep = json.loads(sweep_path.read_text())
    _, splits = make_splits(cfg)
    base = load(cfg.model)
    retain = load_task(cfg.retain).head(cfg.n_retain)
    rows = []
    for k, i in enumerate(a.splits):
        sp = splits[i]
        order = ["graddiff", "mansu"] if k % 2 == 0 else ["mansu", "graddiff"]
        out: dict[str, dict[str, Any]] = {}
        for m in order:
            st = method_settings(cfg, m, sweep)
            t = time.perf_counter()
            res = unlearn(base, sp.forget, method_retain(retain, sp), method=m, seed=0, **st)
            secs = time.perf_counter() - t
            last: dict[str, Any] = next((h for h in reversed(res.loss_history) if "forget_acc" in h), {})
            out[m] = {"seconds": secs, "settings": st, "stop_reason": res.stop_reason,
                      "steps": len(res.loss_history) - 1, "forget_acc": last.get("forget_acc"),
                      "forget_acc_nf4": last.get("forget_acc_nf4"),
                      "phases": res.diagnostics.get("seconds"), "changed_share": res.mask_stats.get("changed_share"),
                      "edited_sha256": res.handle.sha256}
            print(f"{sp.name} {m}: {secs:.1f} s, stop {res.stop_reason}, forget acc {last.get('forget_acc')}",
                  flush=True)
        ratio = out["mansu"]["seconds"] / out["graddiff"]["seconds"]
        phases = out["mansu"]["phases"] or {}
        print(f"{sp.name}: MANSU / GradDiff = {ratio:.2f}  (MANSU phases: "
              + ", ".join(f"{p} {s:.1f}" for p, s in sorted(phases.items(), key=lambda x: -x[1])) + ")", flush=True)
        rows.append({"split": sp.name, "order": order, "ratio": ratio, **out})
    doc = {"command": "python " + " ".join(sys.argv), "run_info": run_info(), "model": cfg.model, "threads": a.threads,
           "forget_rows": cfg.n_forget, "retain_rows": cfg.n_retain,
           "retain_same_train_rows": cfg.n_retain_same_train, "splits": rows,
           "ratio_max": max(r["ratio"] for r in rows), "table": table(rows)}
    print("MANSU / GradDiff: " + ", ".join(f"{r['split']} {r['ratio']:.2f}" for r in rows) + " (target ≤ 2)")
    if a.json:
        write_json_atomic(Path(a.json), doc)


if __name__ == "__main__":
    main()
