"""How reliable is the relearning ground truth that CAD's score is asked to predict? (issue 12, tiny worlds)

    python benchmarks/cad_relearn_reliability.py [--cells docs/results/cad_validation/cells]
                                                 [--json docs/results/cad_validation/relearn_reliability.json]

Issue 12 asks for Spearman(score, relearning recovery) ≤ −0.6 *within* a world. A correlation with a noisy
measurement is bounded by that measurement's reliability (Spearman 1904: observed ρ ≤ √(rel_x · rel_y)), so
before asking whether a score predicts relearning we measure how well relearning predicts *itself*. Every
unlearned model of the validation that forgot is rebuilt exactly as ``benchmarks/cad_validation.py --stage
methods`` built it (seed 0, deterministic; the rebuilt forget margin is checked against the stored one) and
attacked twice, with the validation's own attack (three budgets, best kept; recovery = (attacked − M₁) ÷
(M₀ − M₁) on the mean forget margin):

* **set 1**: the validation's attacker rows (elements 32–47); its recovery must equal the stored one
  (checked, ``reproduces``);
* **set 2**: another disjoint set of same-domain facts, the other forget split's rows (A and T models:
  rows 16–31; B and U models: rows 0–15). The same construct ("does fine-tuning on other facts of this
  domain bring these back?") measured with other attacker data.

Per world (tiny-facts = A + B, pretrained pair = T + U), one row per distinct model:

* test–retest: Spearman(recovery on set 1, recovery on set 2), bootstrap CI over models;
* split-half: recovery on the even vs the odd forget rows (set 1), Spearman–Brown corrected;
* reliability of each score from its stored bootstrap CI: rel = 1 − mean(se²) ÷ var(score), se = CI width ÷
  3.92 (the share of the between-model variance that is not row-sampling noise); the same for recovery from a
  bootstrap over forget rows;
* the attenuation ceiling √(rel_score · rel_recovery): the largest |ρ| the data could show for a score that
  ranked the models perfectly on the true quantity;
* Spearman of E, Π and the paper's CAD with recovery on set 2 and with the mean of both sets (a more reliable
  truth), to see whether the missed target moves when the truth is measured twice.

Nothing here feeds the verdict: it qualifies what the within-world targets can show.
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
OTHER_SET = {"A": (16, 32), "T": (16, 32), "B": (0, 16), "U": (0, 16)}
WORLDS = {"tiny-facts (A, B)": ("A", "B"), "pretrained pair (T, U)": ("T", "U")}
N_BOOT = 2000


def _validation() -> Any:
    spec = importlib.util.spec_from_file_location("cad_validation", ROOT / "benchmarks" / "cad_validation.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def row_margins(handle: Any, task: Any) -> np.ndarray:
    """Per-row forget margins (answer − mean wrong option at the last prompt position)."""
    from circuitforge.cad.hybrids import margin_batch, margins

    mb = margin_batch(handle, task)
    with torch.no_grad():
        return margins(handle.logits(mb.tokens), mb).numpy().astype(float)


def attacked_rows(handle: Any, attacker: Any, forget: Any, lr: float, steps: int) -> np.ndarray:
    """Per-row forget margins after the validation's attack (``cad_validation.relearn``, Adam, full batch,
    seed 0) fine-tuning a copy of ``handle`` on ``attacker``."""
    from circuitforge.models import clone
    from circuitforge.surgery.objectives import answer_batch, answer_nll

    torch.manual_seed(0)
    m = clone(handle, spec=f"{handle.spec}+relearn")
    batch = answer_batch(m, attacker)
    params = list({id(p): p for p in m.hf.parameters()}.values())
    opt = torch.optim.Adam(params, lr=lr)
    m.bridge.eval()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        answer_nll(m.logits(batch.tokens), batch).backward()
        opt.step()
    for p in params:
        p.grad = None
    return row_margins(m, forget)


def recovery(m0: np.ndarray, m1: np.ndarray, attacked: dict[str, np.ndarray], rows: np.ndarray) -> float:
    """The validation's normalised recovery on ``rows``: best budget's mean attacked margin."""
    den = m0[rows].mean() - m1[rows].mean()
    return float((max(a[rows].mean() for a in attacked.values()) - m1[rows].mean()) / den)


def boot_se(m0: np.ndarray, m1: np.ndarray, attacked: dict[str, np.ndarray], seed: int = 0) -> float:
    """Bootstrap standard error of :func:`recovery` over forget rows (resamples with a zero deficit dropped)."""
    rng = np.random.default_rng(seed)
    n, vals = len(m0), []
    for _ in range(N_BOOT):
        r = rng.integers(0, n, n)
        if m0[r].mean() - m1[r].mean() > 1e-9:
            vals.append(recovery(m0, m1, attacked, r))
    return float(np.std(vals, ddof=1))


def reliability(values: list[float], ses: list[float]) -> float | None:
    """1 − mean(se²) ÷ var(values): the share of the between-model variance not explained by sampling noise
    (can be negative when the noise exceeds the spread)."""
    v = float(np.var(values, ddof=1))
    return None if v <= 0 else 1.0 - float(np.mean(np.square(ses))) / v


def measure(v: Any, cell: dict[str, Any], w: Any) -> dict[str, Any]:
    from circuitforge.surgery import unlearn

    name = cell["name"]
    split, method, target = name.split("-")[0], name.split("-")[2], float(name.rsplit("-t", 1)[1])
    t0 = time.time()
    m1 = unlearn(w.base, w.forget, w.other, method=method, seed=0, **v.method_settings(w, method, target)).handle
    m0r, m1r = row_margins(w.base, w.forget), row_margins(m1, w.forget)
    set2 = w.forget_all.subset(range(*OTHER_SET[split]), f"elements[{OTHER_SET[split][0]}:{OTHER_SET[split][1]}]")
    att = {s: {f"lr{lr:g}-s{st}": attacked_rows(m1, task, w.forget, lr, st) for lr, st in v.ATTACKS}
           for s, task in (("set1", w.retain), ("set2", set2))}
    all_rows = np.arange(len(m0r))
    t = cell["truth"]
    rec1 = recovery(m0r, m1r, att["set1"], all_rows)
    s = cell["summary"]
    return {
        "split": split, "method": method, "target": target, "edit": cell["edit"],
        "margin_edited": float(m1r.mean()),
        "rebuilt_margin_matches": abs(float(m1r.mean()) - t["margin_edited"]) <= 1e-3 * max(1.0, abs(t["margin_edited"])),
        "stored_recovery": t["relearn_recovery"], "recovery_set1": rec1,
        "reproduces": abs(rec1 - t["relearn_recovery"]) <= 1e-3,
        "recovery_set2": recovery(m0r, m1r, att["set2"], all_rows),
        "recovery_even": recovery(m0r, m1r, att["set1"], all_rows[0::2]),
        "recovery_odd": recovery(m0r, m1r, att["set1"], all_rows[1::2]),
        "recovery_se_set1": boot_se(m0r, m1r, att["set1"]), "recovery_se_set2": boot_se(m0r, m1r, att["set2"]),
        "E": s["erasure_score"], "E_ci": s["erasure_score_ci"], "presence": s.get("presence"),
        "presence_ci": s.get("presence_ci"), "paper_cad": cell["cad_value"], "forget_drop": t["forget_drop"],
        "seconds": time.time() - t0,
    }


def _se(ci: list[float] | None) -> float | None:
    return None if ci is None else (ci[1] - ci[0]) / 3.92


def world_stats(rows: list[dict[str, Any]]) -> dict[str, Any]:
    from circuitforge.eval.stats import spearman_ci

    def sp(x: list[float], y: list[float], z: list[float] | None = None) -> dict[str, Any]:
        return dataclasses.asdict(spearman_ci(x, y, zs=z))

    r1, r2 = [q["recovery_set1"] for q in rows], [q["recovery_set2"] for q in rows]
    mean12 = [(a + b) / 2 for a, b in zip(r1, r2, strict=True)]
    half = sp([q["recovery_even"] for q in rows], [q["recovery_odd"] for q in rows])
    sb = None if half["value"] is None else 2 * half["value"] / (1 + half["value"])
    rel_rec = reliability(r1, [q["recovery_se_set1"] for q in rows])
    rel: dict[str, Any] = {"recovery_set1": rel_rec,
                           "recovery_set2": reliability(r2, [q["recovery_se_set2"] for q in rows])}
    ceil: dict[str, Any] = {}
    for k, ci_key in (("E", "E_ci"), ("presence", "presence_ci")):
        vals, ses = [q[k] for q in rows], [_se(q[ci_key]) for q in rows]
        rel[k] = reliability(vals, ses) if all(x is not None for x in ses) else None
        ceil[k] = (float(np.sqrt(rel[k] * rel_rec)) if rel[k] is not None and rel_rec is not None
                   and rel[k] > 0 and rel_rec > 0 else 0.0)
    fd = [q["forget_drop"] for q in rows]
    corr = {f"{k}_vs_{truth}": sp([q[k] for q in rows], y)
            for k in ("E", "presence", "paper_cad") for truth, y in (("set1", r1), ("set2", r2), ("mean", mean12))}
    corr.update({f"{k}_vs_mean_partial_forget_drop": sp([q[k] for q in rows], mean12, fd) for k in ("E", "presence")})
    return {"n": len(rows), "test_retest": sp(r1, r2), "split_half": half, "split_half_spearman_brown": sb,
            "reliability": rel, "ceiling": ceil, "correlations": corr,
            "recovery_set1_range": [min(r1), max(r1)], "recovery_set2_range": [min(r2), max(r2)]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", default=str(ROOT / "docs/results/cad_validation/cells"))
    ap.add_argument("--json", default=str(ROOT / "docs/results/cad_validation/relearn_reliability.json"))
    a = ap.parse_args()
    v = _validation()
    from circuitforge._provenance import write_json_atomic

    out_path = Path(a.json)
    done: dict[str, Any] = json.loads(out_path.read_text())["models"] if out_path.exists() else {}
    worlds: dict[str, Any] = {}
    for path in sorted(Path(a.cells).glob("*-method-*.json")):
        cell = json.loads(path.read_text())
        t = cell.get("truth") or {}
        if not t.get("forgot") or t.get("relearn_recovery") is None or cell["name"] in done:
            continue
        split = cell["name"].split("-")[0]
        w = worlds.setdefault(split, v.World(split))
        q = measure(v, cell, w)
        done[cell["name"]] = q
        print(f"{cell['name']}: set1 {q['recovery_set1']:.2f} (stored {q['stored_recovery']:.2f}) "
              f"set2 {q['recovery_set2']:.2f} even/odd {q['recovery_even']:.2f}/{q['recovery_odd']:.2f} "
              f"({q['seconds']:.0f} s)", flush=True)
        write_json_atomic(out_path, {"models": done})
    seen: set[tuple[float, int]] = set()
    by_world: dict[str, list[dict[str, Any]]] = {k: [] for k in WORLDS}
    excluded = []
    for name, q in sorted(done.items()):
        key = (round(q["edit"]["l2"], 9), q["edit"]["changed"])
        if key in seen:
            continue
        seen.add(key)
        if not (q["rebuilt_margin_matches"] and q["reproduces"]):
            excluded.append(name)
            continue
        for world, splits in WORLDS.items():
            if q["split"] in splits:
                by_world[world].append(q)
    stats = {world: world_stats(rows) for world, rows in by_world.items() if len(rows) >= 4}
    for world, st in stats.items():
        tr = st["test_retest"]
        print(f"{world}: n {st['n']}, test-retest ρ {tr['value']:.2f} [{tr['lo']:.2f}, {tr['hi']:.2f}], "
              f"split-half (S-B) {st['split_half_spearman_brown']:.2f}, reliability {st['reliability']}, "
              f"ceiling {st['ceiling']}")
    write_json_atomic(out_path, {"command": "python benchmarks/cad_relearn_reliability.py", "worlds": stats,
                                 "excluded_not_reproduced": excluded, "models": done})


if __name__ == "__main__":
    sys.exit(main())
