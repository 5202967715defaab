"""Exploratory (issue 12): does a linearised relearning attack predict the real one? (tiny-facts)

    python benchmarks/cad_linear_relearn.py [--cells docs/results/cad_validation/cells]
                                            [--json docs/results/cad_validation/linear_relearn.json]

The CAD validation's relearning attack fine-tunes an unlearned model M₁ on disjoint same-domain facts
(rows 32–47) and measures how much of the forget rows' margin comes back. Relearning on *other* facts can
only bring these back if the two share parameters: to first order, one Adam step on the attacker's loss
``NLL_A`` changes the forget margin ``m_f`` by ``∇m_f · (−lr · sign ∇NLL_A)`` (Adam's first step is the
sign step). Three quantities per model, all at M₁, none reading the attack's outcome:

* ``cos``: cosine between ``∇m_f`` and ``−∇NLL_A`` over every parameter the attacker trains;
* ``sign_step``: the first-order margin gain of one sign step at lr 1e-3, ÷ the margin deficit m₀ − m₁;
* ``one_step``: the margin actually regained after one real Adam step at lr 1e-3, ÷ the deficit.

Each is rank-correlated (Spearman, 95% bootstrap CI over models, partial on the forget drop) with the
stored relearning recovery (best of three attacker budgets, up to 30 steps) of the unlearned models that
forgot, one per distinct model. Models are rebuilt exactly as ``benchmarks/cad_validation.py --stage
methods`` built them (seed 0, deterministic); the rebuilt model's forget margin is checked against the
stored one. Exploratory, like ``benchmarks/cad_predictors.py``: a candidate, not a validated score.
"""

import argparse
import dataclasses
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent


def _validation() -> Any:
    spec = importlib.util.spec_from_file_location("cad_validation", ROOT / "benchmarks" / "cad_validation.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _grads(loss: torch.Tensor, params: list[torch.nn.Parameter]) -> list[torch.Tensor]:
    gs = torch.autograd.grad(loss, params, allow_unused=True)
    return [g if g is not None else torch.zeros_like(p) for g, p in zip(gs, params, strict=True)]


def linear_relearn(v: Any, m1: Any, w: Any, margin_base: float, lr: float = 1e-3) -> dict[str, float]:
    """The three quantities of the module docstring for one edited model ``m1`` of world ``w``
    (``margin_base``: M₀'s mean forget margin, as the validation cell stored it)."""
    from circuitforge.cad.hybrids import margin_batch, margins
    from circuitforge.models import clone
    from circuitforge.surgery.objectives import answer_batch, answer_nll

    m = clone(m1, spec=f"{m1.spec}+linear")
    m.bridge.eval()
    params = list({id(p): p for p in m.hf.parameters()}.values())   # tied weights once, as the attack does
    for p in params:
        p.requires_grad_(True)
    mb, ab = margin_batch(m, w.forget), answer_batch(m, w.retain)
    mf = margins(m.logits(mb.tokens), mb).mean()
    g_f = torch.cat([g.flatten() for g in _grads(mf, params)])
    ga_parts = _grads(answer_nll(m.logits(ab.tokens), ab), params)
    g_a = torch.cat([g.flatten() for g in ga_parts])
    deficit = margin_base - float(mf.detach())
    cos = float(torch.dot(g_f, -g_a) / (g_f.norm() * g_a.norm()).clamp_min(1e-30))
    sign_step = float(torch.dot(g_f, -lr * torch.sign(g_a))) / deficit
    opt = torch.optim.Adam(params, lr=lr)
    for p, g in zip(params, ga_parts, strict=True):   # the one real step takes the gradient just computed
        p.grad = g
    opt.step()
    after = v.mean_margin(m, w.forget)
    return {"cos": cos, "sign_step": sign_step, "one_step": (after - float(mf.detach())) / deficit,
            "margin_edited": float(mf.detach()), "deficit": deficit}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", default=str(ROOT / "docs/results/cad_validation/cells"))
    ap.add_argument("--json", default=str(ROOT / "docs/results/cad_validation/linear_relearn.json"))
    a = ap.parse_args()
    v = _validation()
    from circuitforge._provenance import write_json_atomic
    from circuitforge.eval.stats import spearman_ci
    from circuitforge.surgery import unlearn

    out_path = Path(a.json)
    done: dict[str, Any] = json.loads(out_path.read_text())["models"] if out_path.exists() else {}
    worlds: dict[str, Any] = {}
    cells = sorted(Path(a.cells).glob("*-method-*.json"))
    for path in cells:
        cell = json.loads(path.read_text())
        t = cell.get("truth") or {}
        if not t.get("forgot") or t.get("relearn_recovery") is None or cell["name"] in done:
            continue
        split, method, target = cell["name"].split("-")[0], cell["name"].split("-")[2], float(cell["name"].rsplit("-t", 1)[1])
        w = worlds.setdefault(split, v.World(split))
        t0 = time.time()
        m1 = unlearn(w.base, w.forget, w.other, method=method, seed=0, **v.method_settings(w, method, target)).handle
        q = linear_relearn(v, m1, w, t["margin_base"])
        q["rebuilt_margin_matches"] = abs(q["margin_edited"] - t["margin_edited"]) <= 1e-3 * max(1.0, abs(t["margin_edited"]))
        q.update(relearn_recovery=t["relearn_recovery"], forget_drop=t["forget_drop"], edit=cell["edit"],
                 seconds=time.time() - t0)
        done[cell["name"]] = q
        print(f"{cell['name']}: cos {q['cos']:+.3f} sign_step {q['sign_step']:+.3f} one_step {q['one_step']:+.3f} "
              f"relearn {t['relearn_recovery']:.2f} match {q['rebuilt_margin_matches']} ({q['seconds']:.0f} s)", flush=True)
        write_json_atomic(out_path, {"models": done})
    # one per distinct model (runs that stopped at the same weights count once), rebuilt faithfully
    seen, rows = set(), []
    for _name, q in sorted(done.items()):
        key = (round(q["edit"]["l2"], 9), q["edit"]["changed"])
        if key in seen or not q["rebuilt_margin_matches"]:
            continue
        seen.add(key)
        rows.append(q)
    y = [q["relearn_recovery"] for q in rows]
    z = [q["forget_drop"] for q in rows]
    corr = {}
    for k in ("cos", "sign_step", "one_step"):
        x = [q[k] for q in rows]
        corr[k] = {"spearman": dataclasses.asdict(spearman_ci(x, y)),
                   "partial_forget_drop": dataclasses.asdict(spearman_ci(x, y, zs=z))}
        print(k, json.dumps(corr[k]))
    write_json_atomic(out_path, {"command": "python benchmarks/cad_linear_relearn.py", "n_models": len(rows),
                                 "correlations": corr, "models": done})


if __name__ == "__main__":
    sys.exit(main())
