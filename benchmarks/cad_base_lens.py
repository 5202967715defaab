"""Tried for the mid-depth gate (issue 12): is the forget answer still *written* in M₁'s residual, read with a
lens fitted on M₀?

    python benchmarks/cad_base_lens.py [--splits A,B,T,U] [--json docs/results/cad_validation/base_lens.json]

Layer hybrids ask whether M₀'s blocks ≥ L can still *compute* the answer from M₁'s residual at L. Below an
edit they always can (the residual is M₀'s), so a gate at depth k and an erasure at depth k give the same
curve, and the erasure score counts the depth after k either way: a gate in block n/2 scores about half the
interior depth, like an erasure there (the ``mid-ascent`` controls of ``benchmarks/cad_validation.py``).
What tells them apart is whether the answer was already *in* the residual before the edited block. A linear
lens cannot recall a fact, only read one that is there, so this script measures that:

* per layer L (input of block L) an affine map from M₀'s residual to M₀'s final residual, ridge least
  squares (λ = 0.01 · rows) at every position of texts the edit should not touch (the other-domain retain
  and retain-paraphrase rows, the same-domain rows 32–47 and their paraphrases), read through M₀'s final
  norm and unembedding;
* ``a_L(M)`` = the mean answer − wrong-option margin that lens gives on M's residual at the forget rows'
  last positions; ``w_L = clip(a_L(M₀) / m₀, 0, 1)`` (m₀: M₀'s final margin) is how much of the answer M₀
  has already written at L; ``P_L = a_L(M₁) / a_L(M₀)`` is how much of *that* M₁ still carries;
* **presence** ``Π = Σ_L w_L clip(P_L, 0, 1) / Σ_L w_L`` over the interior layers ``1 ≤ L < n`` (the same
  rows' same-domain version ``Π^r`` for specificity), bootstrap CI over forget rows (1000 resamples).

Π ≈ 1: the answer M₀ writes is still written in M₁ (a gate after it, or no change); Π ≈ 0: it is gone from
the residual wherever M₀ had it. Models: each split's controls and every method cell of the validation,
rebuilt with the validation's settings (checked against the stored own margin) and read next to the stored
erasure score, verdict and relearning recovery. Evidence only: the verdict does not read Π.
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cad_validation as cv  # noqa: E402


def _resid(h: Any, task: Any) -> tuple[list[torch.Tensor], Any, torch.Tensor]:
    """Residuals ``[n+1] × [batch, pos, d]``, the margin batch and a ``[batch, pos]`` mask of real positions."""
    from circuitforge.cad.hybrids import margin_batch, residuals

    mb = margin_batch(h, task)
    res, _ = residuals(h, mb.tokens, mb.last)
    mask = torch.arange(mb.tokens.shape[1])[None, :] <= mb.last[:, None]
    return res, mb, mask


def fit_lens(m0: Any, tasks: list[Any], lam: float = 1e-2) -> list[torch.Tensor]:
    """Per block input L = 0..n−1 a ``[d+1, d]`` affine map to M₀'s final residual (module doc)."""
    xs: list[list[torch.Tensor]] = [[] for _ in range(m0.n_layers + 1)]
    for t in tasks:
        res, _, mask = _resid(m0, t)
        for L, r in enumerate(res):
            xs[L].append(r[mask].float())
    y = torch.cat(xs[-1])
    out = []
    for L in range(m0.n_layers):
        x = torch.cat(xs[L])
        x1 = torch.cat([x, torch.ones(len(x), 1)], 1)
        out.append(torch.linalg.solve(x1.T @ x1 + lam * len(x) * torch.eye(x1.shape[1]), x1.T @ y))
    return out


@torch.no_grad()
def lens_margins(m0: Any, lenses: list[torch.Tensor], h: Any, task: Any) -> torch.Tensor:
    """``[n+1, batch]``: per layer the margin M₀'s lens and readout give on ``h``'s residual at each row's
    last position (row n: ``h``'s final residual through M₀'s readout, no lens)."""
    from circuitforge.cad.hybrids import margins

    res, mb, _ = _resid(h, task)
    rows = torch.arange(len(mb.last))
    out = []
    for L, r in enumerate(res):
        x = r[rows, mb.last].float()
        if L < len(lenses):
            x = torch.cat([x, torch.ones(len(x), 1)], 1) @ lenses[L]
        lg = m0.bridge.unembed(m0.bridge.ln_final(x[:, None, :].to(r.dtype)))[:, 0]
        out.append(margins(lg, mb))
    return torch.stack(out)


def presence(a0: torch.Tensor, a1: torch.Tensor, m0_final: torch.Tensor, idx: torch.Tensor | None = None) -> tuple[float, list[float]]:
    """``(Π, P_L per layer)`` from lens margins ``[n+1, batch]`` of M₀ and M₁ (module doc)."""
    if idx is not None:
        a0, a1, m0_final = a0[:, idx], a1[:, idx], m0_final[idx]
    s0, s1, m = a0.sum(1), a1.sum(1), float(m0_final.sum())
    n = a0.shape[0] - 1
    w = (s0 / m).clamp(0, 1)[1:n]
    p = torch.where(s0.abs() > 1e-9, s1 / s0, torch.zeros_like(s1))
    pi = float((w * p[1:n].clamp(0, 1)).sum() / w.sum()) if float(w.sum()) > 0 else float("nan")
    return pi, [float(x) for x in p]


def boot(a0: torch.Tensor, a1: torch.Tensor, m0f: torch.Tensor, n_boot: int = 1000) -> list[float]:
    g = torch.Generator().manual_seed(0)
    k = a0.shape[1]
    vals = torch.tensor([presence(a0, a1, m0f, torch.randint(k, (k,), generator=g))[0] for _ in range(n_boot)])
    return [float(torch.nanquantile(vals, 0.025)), float(torch.nanquantile(vals, 0.975))]


def models_of(w: Any, split: str) -> list[tuple[str, Any]]:
    from circuitforge.cad import block_ascent, early_ascent, late_ascent, subject_erasure, suppression_edit
    from circuitforge.models import load
    from circuitforge.models.tiny import ensure_finetuned, ensure_retrained
    from circuitforge.surgery import METHODS, unlearn

    other = cv.SPLITS["A" if split in ("B", "U") else "B"]
    keep = w.forget_all.subset(range(*other), "elements[other split]")
    n = w.base.n_layers
    out: list[tuple[str, Any]] = [
        (f"{split}-control-subject-erasure", lambda: subject_erasure(w.base, w.forget)),
        (f"{split}-control-early-ascent", lambda: early_ascent(w.base, w.forget, 1, lr=5e-4, max_steps=300, retain=keep)),
        (f"{split}-control-readout-edit", lambda: suppression_edit(w.base, w.forget)),
        (f"{split}-control-late-ascent", lambda: late_ascent(w.base, w.forget, 1, lr=5e-4, max_steps=300, retain=keep)),
        (f"{split}-control-mid-ascent", lambda: block_ascent(w.base, w.forget, [n // 2], lr=5e-4, max_steps=300, retain=keep, tag="mid-ascent")),
    ]
    if split in cv.PAIR:
        out.append((f"{split}-control-oracle-finetuned", lambda: load(str(ensure_finetuned(w.rows)))))
    else:
        out.append((f"{split}-control-oracle-same-init", lambda: load(str(ensure_retrained(w.rows, 0, 0)))))
    for method in METHODS:
        for target in cv.STRENGTHS + ((0.0,) if method != "mansu" else ()):
            kw = cv.method_settings(w, method, target)
            out.append((f"{split}-method-{method}-t{target}",
                        lambda method=method, kw=kw: unlearn(w.base, w.forget, w.other, method=method, seed=0, **kw).handle))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--splits", default="A,B,T,U")
    ap.add_argument("--cells", default="docs/results/cad_validation/cells")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    from circuitforge.data import load_task

    rows: list[dict[str, Any]] = []
    for split in a.splits.split(","):
        w = cv.World(split)
        fp = load_task("tiny-facts:forget_paraphrase")
        fit = [w.other, load_task("tiny-facts:retain_paraphrase"), w.retain, fp.subset(range(*cv.RELEARN_ROWS), "same-domain paraphrase")]
        lenses = fit_lens(w.base, fit)
        a0f, a0r = lens_margins(w.base, lenses, w.base, w.forget), lens_margins(w.base, lenses, w.base, w.retain)
        m0f, m0r = a0f[-1], a0r[-1]
        share = [float(x) for x in (a0f.sum(1) / m0f.sum())]
        print(f"split {split}: M₀ lens share of the final forget margin, L = 0..n: " + ", ".join(f"{x:.2f}" for x in share), flush=True)
        for name, build in models_of(w, split):
            cell_path = Path(a.cells) / f"{name}.json"
            cell = json.loads(cell_path.read_text()) if cell_path.exists() else None
            h = build()
            a1f, a1r = lens_margins(w.base, lenses, h, w.forget), lens_margins(w.base, lenses, h, w.retain)
            pi, p = presence(a0f, a1f, m0f)
            pir, pr = presence(a0r, a1r, m0r)
            own = float(cv.mean_margin(h, w.forget))
            truth = (cell or {}).get("truth") or {}
            stored = truth.get("margin_edited")
            row = {"name": name, "split": split, "label": (cell or {}).get("label"), "verdict": (cell or {}).get("verdict"),
                   "erasure_score": (cell or {}).get("score"), "presence": pi, "presence_ci": boot(a0f, a1f, m0f),
                   "presence_retain": pir, "P_forget": p, "P_retain": pr, "m0_lens_share": share,
                   "relearn_recovery": truth.get("relearn_recovery"), "forgot": truth.get("forgot"),
                   "own_margin": own, "stored_own_margin": stored,
                   "rebuilt_matches": stored is None or abs(own - stored) <= 1e-3 * max(1.0, abs(stored))}
            rows.append(row)
            print(f"  {name:34s} {str(row['verdict']):13s} E={row['erasure_score'] if row['erasure_score'] is None else round(row['erasure_score'], 2)} "
                  f"Π={pi:.2f} {[round(x, 2) for x in row['presence_ci']]} Π^r={pir:.2f} P_L={[round(x, 2) for x in p]} "
                  f"relearn={truth.get('relearn_recovery')} match={row['rebuilt_matches']}", flush=True)
    from circuitforge.eval.stats import spearman_ci

    corr: dict[str, Any] = {}
    for world, splits in (("tiny-facts (A, B)", "AB"), ("pretrained pair (T, U)", "TU")):
        seen: set[tuple[float, float]] = set()
        xs, es, ys = [], [], []
        for r in rows:
            if r["split"] in splits and "-method-" in r["name"] and r["forgot"] and r["relearn_recovery"] is not None:
                key = (round(r["erasure_score"], 6), round(r["relearn_recovery"], 6))
                if key in seen:
                    continue
                seen.add(key)
                xs.append(r["presence"])
                es.append(r["erasure_score"])
                ys.append(r["relearn_recovery"])
        if len(xs) >= 5:
            pe, ee = spearman_ci(xs, ys, n_boot=2000, seed=0), spearman_ci(es, ys, n_boot=2000, seed=0)
            corr[world] = {"presence_vs_relearn": {"rho": pe.value, "ci": [pe.lo, pe.hi], "n": len(xs)},
                           "erasure_score_vs_relearn": {"rho": ee.value, "ci": [ee.lo, ee.hi], "n": len(es)}}
            print(f"{world}: Spearman(Π, relearn) {pe.value:+.2f} [{pe.lo:+.2f}, {pe.hi:+.2f}]; "
                  f"Spearman(E, relearn) {ee.value:+.2f} [{ee.lo:+.2f}, {ee.hi:+.2f}] (n = {len(xs)} distinct models that forgot)")
    if a.json:
        from circuitforge._provenance import run_info, write_json_atomic

        write_json_atomic(a.json, {"command": "python " + " ".join(sys.argv), "run_info": run_info(), "rows": rows,
                                   "spearman_by_world": corr})


if __name__ == "__main__":
    main()
