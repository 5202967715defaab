"""Does a gradient-transfer score predict relearning where forward-pass evidence does not? (issue 12, tiny worlds)

    python benchmarks/cad_gradient_transfer.py [--reliability docs/results/cad_validation/relearn_reliability.json]
                                               [--json docs/results/cad_validation/gradient_transfer.json]

Every score CAD's verdict reads is a forward pass on the forget prompts, and none has predicted relearning
within a world (docs/cad-validation.md). Relearning on *disjoint* facts of the domain restores the targets
when what the unlearning removed is shared by the facts — a gate that training on any of them undoes — and not
when each fact's storage went separately. That is a statement about M₁'s **gradients**, which no forward pass
sees: if the facts share one way back, the loss gradients of two disjoint halves of the forget rows point
the same way, and a step on one half lowers the other half's loss.

Scores (M₁ = the unlearned model; g_S = ∇θ of the mean answer NLL on rows S, every parameter; the forget rows
split into even and odd rows, no attacker data and nothing from either truth):

* **primary, fixed before any correlation was computed**: transfer cosine G = cos(g_even, g_odd);
* secondary: the first-order transfer ratio T = (g_even · g_odd) ÷ ½(|g_even|² + |g_odd|²) (how much a step on
  one half lowers the other's loss, relative to a step on that half itself), and the reversal cosine
  V = cos(−g_all, θ₀ − θ₁) (whether descending the forget loss walks the edit back).

Truth: relearning recovery measured here on the same rebuilt models, with the validation's attack (three
budgets, best kept; ``benchmarks/cad_relearn_reliability.py``'s functions): set 1 (the validation's attacker
rows) and set 2 (another disjoint set of same-domain facts), and their mean. The models are rebuilt as that
script rebuilt them (seed 0; one model per distinct edit). The tiny worlds are trained on first use, and a
world trained on another machine is close but not bitwise equal (forget margins differ by ~0.01), so truths
are measured again rather than read; the stored recoveries are kept beside them (``stored_*``), and E — a
comparator only — is the stored one (``E_stored``: the earlier machine's models). Predicted sign: + (more transfer →
more relearning); the erasure-evidence reading is −G. Per world: Spearman with a bootstrap CI over models,
and partial on the forget drop.
"""

import argparse
import dataclasses
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
WORLDS = {"tiny-facts (A, B)": ("A", "B"), "pretrained pair (T, U)": ("T", "U")}


def _load(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def forget_grad(handle: Any, task: Any, rows: list[int]) -> torch.Tensor:
    """∇θ of the mean answer NLL on ``rows`` of ``task``, every parameter of ``handle`` flattened (one vector)."""
    from circuitforge.surgery.objectives import answer_batch, answer_nll

    params = list({id(p): p for p in handle.hf.parameters()}.values())
    batch = answer_batch(handle, task, rows=rows)
    handle.bridge.eval()
    for p in params:
        p.grad = None
    answer_nll(handle.logits(batch.tokens), batch).backward()
    g = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in params])
    for p in params:
        p.grad = None
    return g.detach().double()


def scores(base: Any, m1: Any, task: Any) -> dict[str, float]:
    """G (primary), T and V of the module docstring for unlearned model ``m1`` of ``base`` on ``task``."""
    n = len(task)
    ge, go = forget_grad(m1, task, list(range(0, n, 2))), forget_grad(m1, task, list(range(1, n, 2)))
    ga = forget_grad(m1, task, list(range(n)))
    p0 = torch.cat([p.detach().flatten() for p in {id(p): p for p in base.hf.parameters()}.values()]).double()
    p1 = torch.cat([p.detach().flatten() for p in {id(p): p for p in m1.hf.parameters()}.values()]).double()
    cos = torch.nn.functional.cosine_similarity
    return {"G": float(cos(ge, go, dim=0)),
            "T": float((ge @ go) / (0.5 * (ge @ ge + go @ go))),
            "V": float(cos(-ga, p0 - p1, dim=0))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reliability", default=str(ROOT / "docs/results/cad_validation/relearn_reliability.json"))
    ap.add_argument("--cells", default=str(ROOT / "docs/results/cad_validation/cells"))
    ap.add_argument("--json", default=str(ROOT / "docs/results/cad_validation/gradient_transfer.json"))
    a = ap.parse_args()
    v, rr = _load("cad_validation"), _load("cad_relearn_reliability")
    from circuitforge._provenance import run_info, write_json_atomic
    from circuitforge.eval.stats import spearman_ci
    from circuitforge.surgery import unlearn

    truth = json.loads(Path(a.reliability).read_text())["models"]
    out_path = Path(a.json)
    done: dict[str, Any] = json.loads(out_path.read_text()).get("models", {}) if out_path.exists() else {}
    worlds: dict[str, Any] = {}
    seen: set[tuple[float, int]] = set()
    for name, q in sorted(truth.items()):
        key = (round(q["edit"]["l2"], 9), q["edit"]["changed"])
        if key in seen:
            continue   # the same model under another target strength
        seen.add(key)
        if name in done:
            continue
        cell = json.loads((Path(a.cells) / f"{name}.json").read_text())
        split, method, target = q["split"], q["method"], q["target"]
        w = worlds.setdefault(split, v.World(split))
        t0 = time.time()
        m1 = unlearn(w.base, w.forget, w.other, method=method, seed=0, **v.method_settings(w, method, target)).handle
        s = scores(w.base, m1, w.forget)   # before any attack: the attacks fine-tune copies
        m0r, m1r = rr.row_margins(w.base, w.forget), rr.row_margins(m1, w.forget)
        set2 = w.forget_all.subset(range(*rr.OTHER_SET[split]), "set 2")
        att = {k: {f"lr{lr:g}-s{st}": rr.attacked_rows(m1, task, w.forget, lr, st) for lr, st in v.ATTACKS}
               for k, task in (("set1", w.retain), ("set2", set2))}
        rows = np.arange(len(m0r))
        rec = {k: rr.recovery(m0r, m1r, att[k], rows) for k in ("set1", "set2")}
        done[name] = {**s, "split": split, "method": method, "target": target,
                      "recovery_set1": rec["set1"], "recovery_set2": rec["set2"],
                      "forget_drop": float(1 - m1r.mean() / m0r.mean()),   # as cad_validation.truth
                      "margin_edited": float(m1r.mean()), "stored_margin_edited": cell["truth"]["margin_edited"],
                      "stored_recovery_set1": q["recovery_set1"], "stored_recovery_set2": q["recovery_set2"],
                      "E_stored": q["E"], "seconds": time.time() - t0}
        print(f"{name}: G {s['G']:+.3f} T {s['T']:+.3f} V {s['V']:+.3f} | recovery set1 {rec['set1']:.2f} "
              f"(stored {q['recovery_set1']:.2f}) set2 {rec['set2']:.2f} (stored {q['recovery_set2']:.2f}) "
              f"({time.time() - t0:.0f} s)", flush=True)
        write_json_atomic(out_path, {"models": done})
        del m1
    base_margin = {}   # the base model of each split, trained here vs the one of the stored cells
    for split in sorted({d["split"] for d in done.values()}):
        w = worlds.setdefault(split, v.World(split))
        stored = json.loads(next(Path(a.cells).glob(f"{split}-method-*.json")).read_text())["truth"]["margin_base"]
        base_margin[split] = {"here": float(rr.row_margins(w.base, w.forget).mean()), "stored": stored}
    stats: dict[str, Any] = {}
    for world, splits in WORLDS.items():
        rows = [d for d in done.values() if d["split"] in splits and d["recovery_set1"] == d["recovery_set1"]]
        if len(rows) < 4:
            continue
        r1, r2 = [d["recovery_set1"] for d in rows], [d["recovery_set2"] for d in rows]
        mean12 = [(x + y) / 2 for x, y in zip(r1, r2, strict=True)]
        fd = [d["forget_drop"] for d in rows]
        st: dict[str, Any] = {"n": len(rows)}
        for k in ("G", "T", "V", "E_stored"):
            xs = [d[k] for d in rows]
            st[k] = {truth_name: dataclasses.asdict(spearman_ci(xs, y)) for truth_name, y in
                     (("set1", r1), ("set2", r2), ("mean", mean12))}
            st[k]["mean_partial_forget_drop"] = dataclasses.asdict(spearman_ci(xs, mean12, zs=fd))
        # how well the truth reproduces: across attacker sets here, and against the recoveries stored from the
        # same (method, strength) models built on the earlier machine's world
        st["test_retest_set1_set2"] = dataclasses.asdict(spearman_ci(r1, r2))
        st["across_machines"] = {k: dataclasses.asdict(spearman_ci([d[k] for d in rows], [d[f"stored_{k}"] for d in rows]))
                                 for k in ("recovery_set1", "recovery_set2", "margin_edited")}
        stats[world] = st
        for k in ("G", "T", "V", "E_stored"):
            cells = ", ".join(f"{t} {st[k][t]['value']:+.2f} [{st[k][t]['lo']:+.2f}, {st[k][t]['hi']:+.2f}]"
                              for t in ("set1", "set2", "mean", "mean_partial_forget_drop"))
            print(f"{world} (n {len(rows)}) ρ({k}, recovery): {cells}")
        tr, am = st["test_retest_set1_set2"], st["across_machines"]
        print(f"{world}: test-retest (set 1 vs set 2) {tr['value']:+.2f} [{tr['lo']:+.2f}, {tr['hi']:+.2f}]; across "
              "machines (here vs stored): " + ", ".join(f"{k} {e['value']:+.2f} [{e['lo']:+.2f}, {e['hi']:+.2f}]"
                                                         for k, e in am.items()))
    write_json_atomic(out_path, {"command": "python benchmarks/cad_gradient_transfer.py", "run_info": run_info(),
                                 "primary": "G vs recovery, predicted sign +", "base_margin": base_margin,
                                 "worlds": stats, "models": done})


if __name__ == "__main__":
    sys.exit(main())
