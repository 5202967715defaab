"""Can a linear stitch make hybrids readable for a model trained separately (the retrain oracle)?

    python benchmarks/cad_stitching.py [--out docs/results/cad_validation/stitching.json]

The CAD verdict calls the tiny retrain oracle ``indeterminate``: M₀'s later layers cannot read the residual
stream of a model trained separately, even on retain rows (basis ≈ 0.1). This experiment tries the obvious
repair, a model stitch: per hybrid layer L an affine map A_L (ridge least squares, penalty λ × mean feature
variance × n) from M₁'s residual at L to M₀'s, fitted on *anchor* sentences (other-domain facts and the
other split's element facts, prompt + answer, every position), then ``H_L`` = M₀'s blocks ≥ L on
``A_L(M₁'s residual)``. Reported per model: recovery on the anchors themselves (in-sample: does the stitch
fit?), the basis on held-out same-domain retain rows (elements 32–47, whose subject tokens no anchor
contains) and E on the forget rows (elements 0–15). Split A of ``benchmarks/cad_validation.py``.
"""

import argparse
import json
import os
import time
from typing import Any

import torch

LAMBDAS = (1e-3, 1e-2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/results/cad_validation/stitching.json")
    a = ap.parse_args()
    from circuitforge._provenance import run_info, write_json_atomic
    from circuitforge.cad.hybrids import HybridMargins, hybrid_logits, margin_batch, margins, residuals
    from circuitforge.cad.recovery import recovery
    from circuitforge.data import load_task
    from circuitforge.models import load
    from circuitforge.models.tiny import ensure_retrained

    t0 = time.time()
    base = load("tiny-facts")
    full, other = load_task("tiny-facts:forget"), load_task("tiny-facts:retain")
    forget, retain = full.subset(range(0, 16), "elements[0:16]"), full.subset(range(32, 48), "elements[32:48]")
    anchors = [it.prompt + it.answer for it in other.items] + [it.prompt + it.answer for it in full.subset(range(16, 32)).items]
    layers = list(range(base.n_layers + 1))

    def fit(m: Any, lam: float) -> list[torch.Tensor]:
        xs: list[list[torch.Tensor]] = [[] for _ in layers]
        ys: list[list[torch.Tensor]] = [[] for _ in layers]
        for text in anchors:
            tok = base.to_tokens(text)
            at = torch.tensor([tok.shape[1] - 1])
            r1, _ = residuals(m, tok, at)
            r0, _ = residuals(base, tok, at)
            for L in layers:
                xs[L].append(r1[L][0])
                ys[L].append(r0[L][0])
        maps = []
        for L in layers:
            x, y = torch.cat(xs[L]), torch.cat(ys[L])
            x1 = torch.cat([x, torch.ones(len(x), 1)], 1)
            reg = lam * len(x) * float(x.var(0).mean()) * torch.eye(x1.shape[1])
            maps.append(torch.linalg.solve(x1.T @ x1 + reg, x1.T @ y))
        return maps

    def stitched(m: Any, task: Any, maps: list[torch.Tensor]) -> HybridMargins:
        mb = margin_batch(base, task)
        with torch.no_grad():
            m0 = margins(base.bridge(mb.tokens), mb)
            resid, own_logits = residuals(m, mb.tokens, mb.last)
            mapped = [torch.cat([r, torch.ones(*r.shape[:2], 1)], -1) @ maps[L] for L, r in enumerate(resid)]
            lg = hybrid_logits(base, mapped, mb.tokens, layers, mb.last)
        return HybridMargins(m0, margins(own_logits, mb), torch.stack([margins(lg[j], mb) for j in range(len(layers))]), layers)

    ex = tuple(range(16))
    models = {"oracle-same-init (gold erasure)": lambda: load(str(ensure_retrained(ex, 0, 0))),
              "oracle-other-init (gold erasure)": lambda: load(str(ensure_retrained(ex, 1, 1))),
              "retrain-other-init (gold unchanged)": lambda: load(str(ensure_retrained((), 1, 1))),
              "retrain-same-init-other-order (gold unchanged)": lambda: load(str(ensure_retrained((), 0, 1))),
              "M₀ itself (stitch sanity check)": lambda: base}
    rows = []
    for name, build in models.items():
        m = build()
        for lam in LAMBDAS:
            maps = fit(m, lam)
            anchor_task = other
            r_anchor = recovery(stitched(m, anchor_task, maps), None, n_boot=200)
            rec = recovery(stitched(m, forget, maps), stitched(m, retain, maps), n_boot=200)
            rows.append({"model": name, "lambda": lam, "anchor_recovery": r_anchor.forget["recovery"],
                         "retain_recovery": rec.retain["recovery"] if rec.retain else None,
                         "forget_recovery": rec.forget["recovery"], "basis": rec.basis,
                         "erasure_score": rec.erasure_score, "erasure_score_ci": rec.erasure_score_ci,
                         "own_forget_ratio": rec.forget["own"]})
            print(f"{name} λ={lam}: anchors R_0 {r_anchor.forget['recovery'][0]:.2f}, basis {rec.basis:.3f}, "
                  f"E {rec.erasure_score:.3f} {[round(x, 3) for x in rec.erasure_score_ci]}", flush=True)

    def f(x: float) -> str:
        return f"{x:.2f}"

    table = {"columns": ["model", "λ", "anchor recovery R_0 / R_n (in-sample)", "basis (held-out retain)",
                         "E [95% CI]"],
             "rows": [[r["model"], f"{r['lambda']:g}", f"{f(r['anchor_recovery'][0])} / {f(r['anchor_recovery'][-1])}",
                       f(r["basis"]), f"{f(r['erasure_score'])} [{f(r['erasure_score_ci'][0])}, {f(r['erasure_score_ci'][1])}]"]
                      for r in rows]}
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    write_json_atomic(a.out, {"command": "python benchmarks/cad_stitching.py", "run_info": run_info(),
                              "n_anchor_sentences": len(anchors), "lambdas": list(LAMBDAS), "rows": rows,
                              "table": table, "seconds": time.time() - t0})
    print(json.dumps(table, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
