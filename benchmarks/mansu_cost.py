"""MANSU's wall time against GradDiff's on the same rows, side by side (issue 16: MANSU ≤ 2× GradDiff).

    python benchmarks/mansu_cost.py [--config benchmarks/unlearning.toml] [--results docs/results/unlearning]
        [--splits 0 1] [--threads 1] [--json PATH]

For each benchmark split (its forget rows, the general retain rows, the benchmark's own settings: GradDiff at
the learning rate its sweep chose, MANSU at its defaults, circuit search included) runs GradDiff and MANSU on
one base model, the order swapped every other split (a noisy machine slows all alike), and prints each
method's wall seconds, the ratio, MANSU's seconds per phase (``diagnostics["seconds"]``), the stop reasons
and the forget accuracies reached. ``--threads``: torch threads (1 leaves a core to a background job and
makes the ratio less sensitive to it).
"""

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="benchmarks/unlearning.toml")
    ap.add_argument("--results", default="docs/results/unlearning", help="the bench's results folder (its sweep.json)")
    ap.add_argument("--splits", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()

    import torch

    from circuitforge._provenance import run_info, write_json_atomic
    from circuitforge.data import load_task
    from circuitforge.eval.bench import BenchConfig, make_splits, method_settings
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
            res = unlearn(base, sp.forget, retain, method=m, seed=0, **st)
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
           "forget_rows": cfg.n_forget, "retain_rows": cfg.n_retain, "splits": rows,
           "ratio_max": max(r["ratio"] for r in rows)}
    print("MANSU / GradDiff: " + ", ".join(f"{r['split']} {r['ratio']:.2f}" for r in rows) + " (target ≤ 2)")
    if a.json:
        write_json_atomic(Path(a.json), doc)


if __name__ == "__main__":
    main()
