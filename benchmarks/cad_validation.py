"""Validate the CAD verdict against known-label controls and measured recovery (tiny-facts).

    python benchmarks/cad_validation.py [--stage calibrate|evaluate|pretrained|methods|report|all]
                                        [--out docs/results/cad_validation] [--splits B,A]

Everything is measured in the run and written as one JSON file per model under ``<out>/cells/`` (a
resumed run skips finished cells); ``--stage report`` reads them back and writes
``<out>/summary.json``, ``<out>/figures.html`` and the page ``docs/cad-validation.md`` (tables generated,
never typed).

* **Calibration controls** (split A: forget rows 0–15 of the elements domain; retain = same-domain rows
  32–47): the retrain oracle from M₀'s initialisation without rows 0–15 (gold erasure) and from another
  initialisation (the basis pitfall); same-data retrains on another batch order and on another init
  (gold unchanged); the readout edit and last-layer gradient ascent (gold suppression); matched random-sign
  benign edits. The verdict thresholds in ``circuitforge/cad/verdict.py`` were chosen from these numbers.
* **Evaluation controls** (split B: forget rows 16–31): the same-init retrain oracle without rows 16–31,
  the readout edit, last-layer ascent at two learning rates, matched random-sign benign edits, the
  same-data other-init retrain.
* **Pretrained-pair controls** (splits T = rows 0–15 and U = rows 16–31, the TOFU design): a shared
  "pretrained" fact world that never saw elements rows 0–31, M₀ = its fine-tune on every fact, the
  retain-model oracle = its fine-tune without the split's rows (gold erasure, sharing M₀'s basis through the
  pretrained weights), the same fine-tune on another batch order (gold unchanged), and the block-ascent,
  readout and subject controls on that M₀ (``circuitforge.models.tiny.ensure_finetuned``). Evaluation
  sets: the thresholds are not fitted on them.
* **Unlearned models**: every method of ``circuitforge.surgery`` at three strengths (target forget accuracy
  0.75 / 0.5 / 0.25; the loop methods also 20 steps without early stop) on each split, with ground truth: relearning recovery (best of three attacker budgets,
  fine-tuning on disjoint facts of the same domain, rows 32–47), NF4 recovery, paraphrase margin, hybrid
  recovery; a matched random-sign benign edit of each (the false-erasure rate).
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

SPLITS = {"A": (0, 16), "B": (16, 32), "T": (0, 16), "U": (16, 32)}  # T, U: the pretrained-pair world (M₀ = a fine-tune)
PAIR = ("T", "U")
RELEARN_ROWS = (32, 48)
STRENGTHS = (0.75, 0.5, 0.25)
LR = {"ga": 1e-3, "graddiff": 1e-3, "npo": 1e-3, "rmu": 3e-3, "sure": 3e-3, "mansu": None}
ATTACKS = ((1e-3, 10), (1e-3, 30), (3e-3, 30))


def settings() -> Any:
    from circuitforge.cad import CADSettings

    return CADSettings(method="eap-ig", ig_steps=3, n_null=100, n_benign=8, n_boot=1000, hybrid_points=None)


class World:
    """The base model, tasks and circuits of one split (built lazily, shared by the cells)."""

    def __init__(self, split: str) -> None:
        from circuitforge.data import load_task
        from circuitforge.models import load
        from circuitforge.models.tiny import ensure_finetuned

        self.split = split
        lo, hi = SPLITS[split]
        self.rows = tuple(range(lo, hi))
        self.base = load("tiny-facts") if split not in PAIR else load(str(ensure_finetuned()))
        full = self.forget_all = load_task("tiny-facts:forget")
        para = load_task("tiny-facts:forget_paraphrase")
        self.forget = full.subset(range(lo, hi), f"elements[{lo}:{hi}]")
        self.paraphrase = para.subset(range(lo, hi), f"elements-paraphrase[{lo}:{hi}]")
        self.retain = full.subset(range(*RELEARN_ROWS), "elements[32:48]")
        self.other = load_task("tiny-facts:retain")
        self._circuit: Any = None

    @property
    def circuit(self) -> Any:
        if self._circuit is None:
            from circuitforge.circuits import CircuitSearch

            self._circuit = CircuitSearch(method="eap-ig", ig_steps=3, faithfulness=0.8, rows=None).find(self.base, self.forget)
        return self._circuit


def mean_margin(handle: Any, task: Any) -> float:
    from circuitforge.cad.hybrids import margin_batch, margins

    mb = margin_batch(handle, task)
    with torch.no_grad():
        return float(margins(handle.logits(mb.tokens), mb).mean())


def relearn(handle: Any, w: World, lr: float, steps: int) -> float:
    """Forget-split mean margin after fine-tuning a copy of ``handle`` on the disjoint rows 32–47."""
    from circuitforge.models import clone
    from circuitforge.surgery.objectives import answer_batch, answer_nll

    torch.manual_seed(0)
    m = clone(handle, spec=f"{handle.spec}+relearn")
    batch = answer_batch(m, w.retain)
    params = list({id(p): p for p in m.hf.parameters()}.values())
    opt = torch.optim.Adam(params, lr=lr)
    m.bridge.eval()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        answer_nll(m.logits(batch.tokens), batch).backward()
        opt.step()
    for p in params:
        p.grad = None
    return mean_margin(m, w.forget)


def ground_truth(handle: Any, w: World) -> dict[str, Any]:
    """Recovery measurements of an edited model (margins: answer − mean wrong option, forget split)."""
    from circuitforge.data import evaluate
    from circuitforge.quant import quantized_copy

    m0, m1 = mean_margin(w.base, w.forget), mean_margin(handle, w.forget)
    attacked = {f"lr{lr:g}-s{steps}": relearn(handle, w, lr, steps) for lr, steps in ATTACKS}
    base_att = {f"lr{lr:g}-s{steps}": relearn(w.base, w, lr, steps) for lr, steps in ATTACKS[:1]}
    nf4 = mean_margin(quantized_copy(handle, "nf4"), w.forget)
    den = m0 - m1
    forgot = den > 0.25 * m0

    def norm(x: float) -> float | None:
        return (x - m1) / den if forgot else None

    return {"margin_base": m0, "margin_edited": m1, "own_ratio": m1 / m0, "forget_drop": 1 - m1 / m0,
            "forgot": bool(forgot), "attacked": attacked, "base_attacked": base_att,
            "relearn_recovery": norm(max(attacked.values())), "nf4_margin": nf4, "nf4_recovery": norm(nf4),
            "paraphrase_ratio": mean_margin(handle, w.paraphrase) / mean_margin(w.base, w.paraphrase),
            "acc": {"forget": evaluate(handle, w.forget).accuracy, "retain_same_domain": evaluate(handle, w.retain).accuracy,
                    "retain_other_domain": evaluate(handle, w.other).accuracy}}


def run_cell(out: Path, name: str, label: str, w: World, build: Any, truth: bool = False, benign_of: Any = None) -> None:
    path = out / "cells" / f"{name}.json"
    if path.exists():
        return
    from circuitforge.cad import cad, edit_stats

    t0 = time.time()
    m = build()
    t_build = time.time() - t0
    r = cad(w.base, m, w.forget, retain=w.retain, circuit=w.circuit, settings=settings())
    doc = {"name": name, "label": label, "split": w.split, "spec": m.spec, "build_seconds": t_build,
           "verdict": r.verdict, "score": r.score, "cad_value": r.value, "cad_z": r.z,
           "summary": r.summary(), "edit": edit_stats(w.base, m), "cad_seconds": r.seconds,
           "own_retain": (r.recovery.get("retain") or {}).get("own")}
    if truth:
        doc["truth"] = ground_truth(m, w)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, path)
    print(f"[{time.strftime('%H:%M:%S')}] {name}: {r.verdict} E={r.score:.3f} CI={r.evidence['erasure_score_ci']} "
          f"own={r.evidence['own']:.2f} basis={r.evidence['basis']} pct={r.evidence['benign_percentile']} "
          f"({time.time() - t0:.0f} s)", flush=True)


def controls(out: Path, split: str) -> None:
    from circuitforge.cad import (
        early_ascent,
        late_ascent,
        matched_random_sign,
        subject_erasure,
        suppression_edit,
    )
    from circuitforge.models import load
    from circuitforge.models.tiny import ensure_finetuned, ensure_retrained

    w = World(split)
    ex = w.rows
    other = SPLITS["A" if split in ("B", "U") else "B"]
    keep = w.forget_all.subset(range(*other), "elements[other split]")  # retain term of the block-ascent controls
    cells: list[tuple[str, str, Any]] = [
        ("subject-erasure", "erasure", lambda: subject_erasure(w.base, w.forget)),
        ("early-ascent", "erasure", lambda: early_ascent(w.base, w.forget, 1, lr=5e-4, max_steps=300, retain=keep)),
        ("readout-edit", "suppression", lambda: suppression_edit(w.base, w.forget)),
        ("late-ascent", "suppression", lambda: late_ascent(w.base, w.forget, 1, lr=5e-4, max_steps=300, retain=keep)),
        ("late-ascent-no-retain", "suppression", lambda: late_ascent(w.base, w.forget, 1, lr=1e-3)),
    ]
    if split in PAIR:  # the TOFU design: M₀ and the oracle are fine-tunes of one pretrained model
        cells += [
            ("oracle-finetuned", "erasure", lambda: load(str(ensure_finetuned(ex)))),
            ("retrain-finetuned-other-order", "unchanged", lambda: load(str(ensure_finetuned((), order_seed=1)))),
        ]
    else:
        cells += [
            ("oracle-same-init", "erasure", lambda: load(str(ensure_retrained(ex, 0, 0)))),
            ("retrain-other-init", "unchanged", lambda: load(str(ensure_retrained((), 1, 1)))),
        ]
    if split == "A":
        cells += [
            ("oracle-other-init", "erasure", lambda: load(str(ensure_retrained(ex, 1, 1)))),
            ("retrain-same-init-other-order", "unchanged", lambda: load(str(ensure_retrained((), 0, 1)))),
        ]
    only = os.environ.get("CAD_VALIDATION_ONLY")
    for name, label, build in cells:
        if only and name not in only.split(","):
            continue
        run_cell(out, f"{split}-control-{name}", label, w, build, truth=label != "unchanged")
    for name in ("early-ascent", "late-ascent", "readout-edit", "subject-erasure"):
        if not (out / "cells" / f"{split}-control-{name}.json").exists():
            continue
        build = dict((n, b) for n, _, b in cells)[name]
        run_cell(out, f"{split}-benign-{name}", "benign", w, lambda b=build: matched_random_sign(w.base, b(), seed=101))


def method_settings(w: World, method: str, target: float) -> dict[str, Any]:
    """The ``unlearn`` settings of one method cell at one strength (``target``: the early-stop forget
    accuracy; 0.0 = 20 steps without early stop)."""
    kw: dict[str, Any] = {"target_forget_acc": target}
    if target == 0.0:
        kw["max_steps"] = 20
    if LR[method] is not None:
        kw["lr"] = LR[method]
    if method == "rmu":
        kw["max_steps"] = 30
    if method == "mansu":
        kw["circuit_nodes"] = tuple(sorted(w.circuit.nodes))
    return kw


def methods(out: Path, split: str) -> None:
    from circuitforge.cad import matched_random_sign
    from circuitforge.surgery import METHODS, unlearn

    w = World(split)
    for method in METHODS:
        # strengths: the early-stop target forget accuracy; loop methods also run 20 steps with no early stop
        for target in STRENGTHS + ((0.0,) if method != "mansu" else ()):
            kw = method_settings(w, method, target)
            name = f"{split}-method-{method}-t{target}"
            cache: dict[str, Any] = {}

            def build(method: str = method, kw: dict[str, Any] = kw, cache: dict[str, Any] = cache) -> Any:
                if "m" not in cache:
                    cache["m"] = unlearn(w.base, w.forget, w.other, method=method, seed=0, **kw).handle
                return cache["m"]

            run_cell(out, name, "method", w, build, truth=True)
            run_cell(out, f"{split}-benign-{method}-t{target}", "benign", w,
                     lambda build=build: matched_random_sign(w.base, build(), seed=202))


# -- report ----------------------------------------------------------------------------------------------
def auroc(pos: list[float], neg: list[float]) -> float | None:
    """P(score of a positive > score of a negative), ties count half (Mann–Whitney)."""
    if not pos or not neg:
        return None
    return sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))


def boot_spearman(x: list[float], y: list[float], z: list[float] | None = None, n: int = 2000) -> dict[str, Any]:
    """Spearman ρ (partial on ``z`` when given) with its bootstrap 95% CI over models:
    :func:`circuitforge.eval.stats.spearman_ci`, in this report's dict form."""
    from circuitforge.eval.stats import spearman_ci

    est = spearman_ci(x, y, zs=z, n_boot=n, seed=0)
    return {"rho": est.value, "ci": [est.lo, est.hi], "n": len(x), "n_boot": est.n_boot}


def calibrate(cells: list[dict[str, Any]]) -> dict[str, Any]:
    """The thresholds the calibration rule gives on the split-A controls (the constants in
    ``circuitforge/cad/verdict.py`` were set to these, rounded to two decimals):

    * E_MIN = midpoint of (highest erasure-score CI upper bound among suppression controls, lowest
      erasure-score CI lower bound among erasure controls that pass the basis check);
    * BASIS_MIN = midpoint of (lowest basis among controls fine-tuned from M₀, highest basis among models
      trained separately);
    * KEEP = midpoint of (lowest own ratio among unchanged controls, highest own ratio among controls that
      forget)."""
    a = {c["name"].split("-control-", 1)[1]: c["summary"] for c in cells if c["name"].startswith("A-control-")}
    separate = {k for k in a if k.startswith(("oracle", "retrain"))}
    sup = [s for k, s in a.items() if k.startswith(("readout", "late"))]
    era = [s for k, s in a.items() if k in ("subject-erasure", "early-ascent")]
    unch = [s for k, s in a.items() if k.startswith("retrain")]
    forgot = [s for k, s in a.items() if not k.startswith("retrain")]
    out: dict[str, Any] = {"controls": sorted(a)}
    if sup and era:
        hi, lo = max(s["erasure_score_ci"][1] for s in sup), min(s["erasure_score_ci"][0] for s in era)
        out["e_min"] = {"suppression_max_upper": hi, "erasure_min_lower": lo, "midpoint": (hi + lo) / 2}
    tuned = [s["basis"] for k, s in a.items() if k not in separate]
    apart = [s["basis"] for k, s in a.items() if k in separate]
    if tuned and apart:
        out["basis_min"] = {"fine_tuned_min": min(tuned), "separate_max": max(apart), "midpoint": (min(tuned) + max(apart)) / 2}
    if unch and forgot:
        u, f = min(s["own_forget_ratio"] for s in unch), max(s["own_forget_ratio"] for s in forgot)
        out["keep"] = {"unchanged_min": u, "forgetting_max": f, "midpoint": (u + f) / 2}
    return out


def summarise(cells: list[dict[str, Any]]) -> dict[str, Any]:
    from circuitforge.cad.verdict import E_MIN

    ctl = [c for c in cells if "-control-" in c["name"]]
    out: dict[str, Any] = {"auroc": {}}
    for scope, rows in (("evaluation (split B)", [c for c in ctl if c["split"] == "B"]),
                        ("evaluation (split T, pretrained pair)", [c for c in ctl if c["split"] == "T"]),
                        ("evaluation (split U, pretrained pair)", [c for c in ctl if c["split"] == "U"]),
                        ("calibration (split A)", [c for c in ctl if c["split"] == "A"]), ("all controls", ctl)):
        pos = [c for c in rows if c["label"] == "erasure"]
        neg = [c for c in rows if c["label"] == "suppression"]
        out["auroc"][scope] = {
            "erasure_score": auroc([c["score"] for c in pos], [c["score"] for c in neg]),
            "paper_cad": auroc([c["cad_value"] for c in pos], [c["cad_value"] for c in neg]),
            "n_erasure": len(pos), "n_suppression": len(neg)}
    ben = [c for c in cells if c["label"] == "benign"]
    draws = [e for c in cells for e in (c["summary"].get("benign_erasure_scores") or [])]
    out["benign"] = {"models": len(ben), "called_erasure": sum(c["verdict"] == "erasure" for c in ben),
                     "verdicts": {v: sum(c["verdict"] == v for c in ben) for v in sorted({c["verdict"] for c in ben})},
                     "null_draws": len(draws), "null_draws_above_e_min": sum(e > E_MIN for e in draws)}
    distinct: dict[tuple[str, float, int], dict[str, Any]] = {}
    for c in cells:  # a stronger setting that stopped at the same step is the same model: count it once
        if c["label"] == "method":
            distinct.setdefault((c["split"], round(c["edit"]["l2"], 6), c["edit"]["changed"]), c)
    meth = [c for c in distinct.values() if c["truth"]["forgot"]]
    out["methods"] = {"models": sum(c["label"] == "method" for c in cells), "distinct": len(distinct), "forgot": len(meth),
                      "verdicts": {v: sum(c["verdict"] == v for c in distinct.values()) for v in sorted({c["verdict"] for c in distinct.values()})}}
    ok = [c for c in meth if c["truth"]["relearn_recovery"] is not None and c["score"] == c["score"]]
    if len(ok) >= 4:
        e = [c["score"] for c in ok]
        rec = [c["truth"]["relearn_recovery"] for c in ok]
        drop = [c["truth"]["forget_drop"] for c in ok]
        cadv = [c["cad_value"] for c in ok]
        out["spearman"] = {
            "erasure_score_vs_relearn": boot_spearman(e, rec),
            "erasure_score_vs_relearn_partial_forget_drop": boot_spearman(e, rec, drop),
            "paper_cad_vs_relearn": boot_spearman(cadv, rec),
            "paper_cad_vs_relearn_partial_forget_drop": boot_spearman(cadv, rec, drop),
            "erasure_score_vs_nf4": boot_spearman([c["score"] for c in ok if c["truth"]["nf4_recovery"] is not None],
                                                  [c["truth"]["nf4_recovery"] for c in ok if c["truth"]["nf4_recovery"] is not None]),
            "erasure_score_vs_paraphrase": boot_spearman(e, [c["truth"]["paraphrase_ratio"] for c in ok]),
        }
    return out


def _f(x: Any, d: int = 2) -> str:
    if x is None:
        return "–"
    if isinstance(x, list):
        return "[" + ", ".join(_f(v, d) for v in x) + "]"
    if isinstance(x, float):
        return "nan" if x != x else f"{x:.{d}f}"
    return str(x)


def report(out: Path, page: Path) -> None:
    """Write summary.json, figures.html and the Markdown page from the cells."""
    from circuitforge.cad import verdict as vmod
    from circuitforge.viz.cad import plot_hybrid_recovery, plot_roc, save_html_many

    cells = [json.loads(p.read_text()) for p in sorted((out / "cells").glob("*.json"))]
    for c in cells:  # the verdict from the stored evidence and the thresholds in force now
        s = c["summary"]
        c["verdict"] = vmod.decide(s["own_forget_ratio"], s["own_forget_ratio_ci"], s["basis"], s["erasure_score"],
                                   s["erasure_score_ci"], s["benign_percentile"]).verdict
    summ = summarise(cells)
    summ["calibration"] = calibrate(cells)
    (out / "calibration.json").write_text(json.dumps(summ["calibration"], indent=1))
    (out / "summary.json").write_text(json.dumps(summ, indent=1))
    cmd = "`; `".join((out / "command.txt").read_text().split("\n")).strip("`; ") if (out / "command.txt").exists() else "?"
    L: list[str] = ["# CAD validation: the verdict against known labels and measured recovery", "",
                    "<!-- generated by benchmarks/cad_validation.py --stage report; do not edit by hand -->", "",
                    f"Commands: `{cmd}` (results: `{out}/cells/*.json`, summary `{out}/summary.json`, "
                    f"figures `{out}/figures.html`). Model: tiny-facts (4 layers). Forget splits: A = elements "
                    "rows 0–15 (calibration), B = rows 16–31 (evaluation); retain = elements rows 32–47. Split T (a second "
                    "evaluation set, the TOFU design) and split U (the same world, forget rows 16–31): M₀ is a fine-tune (300 steps) of a "
                    "shared pretrained fact world that never saw elements rows 0–31, the gold erasure oracle the same pretrained "
                    "model fine-tuned without the split's rows, gold unchanged the same fine-tune on another batch order; "
                    "retain = rows 32–47.", "",
                    f"Thresholds (the midpoint rule of `calibrate` in the script, applied to the split-A controls only; the rule "
                    "was written after the first split-B method cells had been computed, and KEEP was updated once the last "
                    "split-A control finished; every verdict on this page is recomputed from the stored evidence with "
                    f"these constants): KEEP = {vmod.KEEP}, "
                    f"BASIS_MIN = {vmod.BASIS_MIN}, E_MIN = {vmod.E_MIN}, P_MIN = {vmod.P_MIN}. The calibration rule "
                    f"(`calibrate` in the script) on the split-A controls gives: {_cal_text(summ['calibration'])}.", "",
                    "## Known-label controls", "",
                    "| control | label | verdict | E [95% CI] | own forget ratio | basis | benign pct | hybrid R_L (forget), L = 0..n | relearn recovery | paper CAD (z) |",
                    "|---|---|---|---|---|---|---|---|---|---|"]
    for c in cells:
        if c["label"] == "method":
            continue
        s, t = c["summary"], c.get("truth") or {}
        L.append(f"| {c['name']} | {c['label']} | **{c['verdict']}** | {_f(c['score'])} {_f(s['erasure_score_ci'])} | "
                 f"{_f(s['own_forget_ratio'])} | {_f(s['basis'])} | {_f(s['benign_percentile'])} | "
                 f"{_f(s['hybrid_recovery_forget'])} | {_f(t.get('relearn_recovery'))} | {_f(c['cad_value'])} ({_f(c['cad_z'], 1)}) |")
    L += ["", "## The retrain pitfall", "",
          "Hybrids between M₀ and a model trained separately are meaningful only if both share a residual basis. "
          "Measured on the retrained fact worlds (basis = retain recovery over the first half of the depth; "
          "R^r_0 = retain recovery with only M₁'s embedding swapped in):", "",
          "| model | own forget ratio | own retain ratio | R^r_0 | basis | verdict |", "|---|---|---|---|---|---|"]
    for c in cells:
        if any(k in c["name"] for k in ("oracle", "retrain")):
            s_, rr = c["summary"], c["summary"].get("hybrid_recovery_retain") or [float("nan")]
            own_r = c.get("own_retain", s_.get("own_retain_ratio"))
            L.append(f"| {c['name']} | {_f(s_['own_forget_ratio'])} | {_f(own_r)} | {_f(rr[0])} | {_f(s_['basis'])} | {c['verdict']} |")
    stitch = out / "stitching.json"
    if stitch.exists():
        st = json.loads(stitch.read_text())
        L += _tried("**Tried: a linear stitch** (`python benchmarks/cad_stitching.py`, "
              f"{st['n_anchor_sentences']} anchor sentences). Per hybrid layer an affine map from M₁'s residual to "
              "M₀'s, fitted by ridge least squares on other-domain and other-split sentences, then M₀'s blocks ≥ L "
              "on the mapped residual. It fits the anchors themselves (in-sample recovery R_0 ≈ 0.8) but does not "
              "carry to held-out same-domain rows, whose subject tokens no anchor contains: the basis stays far "
              "below the threshold for every separately trained model, so the retrain oracle stays "
              "`indeterminate`. A map learned from other tokens cannot say where a separately trained model keeps "
              "a token it has never been shown next to; the hybrids need a shared basis, i.e. M₁ fine-tuned from M₀.",
                    st["table"]["columns"], st["table"]["rows"])
    own = out / "own_lens.json"
    if own.exists():
        ol = json.loads(own.read_text())
        L += _tried("**Tried: a tuned lens fitted on M₁ itself** (`python benchmarks/cad_own_lens.py --json "
              f"{own}`). No M₀ basis needed: per layer an affine map from M₁'s residual to M₁'s final residual, "
              "fitted on the retain, retain-paraphrase and same-domain rows, read through M₁'s own readout; R_L = "
              "lens margin ÷ M₀'s final margin on the same rows. The oracles show nothing on the targeted rows while "
              "the same-domain rows stay readable — what gold erasure should look like — but so does the "
              "last-block ascent, a known suppression whose hybrids recover the answer fully before the edited "
              "block: a lens fitted on M₁ learns M₁'s own suppression when that is linear. Own-lens evidence "
              "cannot tell erasure from suppression, so the verdict does not use it and the oracle stays "
              "`indeterminate`.", ["model", "label", "targeted R_L, L = 0..n", "same-domain R_L"],
                    [[r["model"], r["label"], ", ".join(f"{x:.2f}" for x in r["targeted"]),
                      ", ".join(f"{x:.2f}" for x in r["same_domain"])] for r in ol["rows"]])
    L += ["", "## Separation", "", "| scope | AUROC erasure vs suppression (E) | AUROC (paper CAD) | n erasure | n suppression |",
          "|---|---|---|---|---|"]
    for k, v in summ["auroc"].items():
        L.append(f"| {k} | {_f(v['erasure_score'])} | {_f(v['paper_cad'])} | {v['n_erasure']} | {v['n_suppression']} |")
    b = summ["benign"]
    L += ["", f"Benign edits (matched random-sign, one per control and per unlearned model): {b['called_erasure']} of "
          f"{b['models']} called `erasure`; verdicts {b['verdicts']}. Benign-null draws inside every CAD run: "
          f"{b['null_draws_above_e_min']} of {b['null_draws']} have E > E_MIN.", "",
          "## Unlearned models", "",
          "| model | verdict | E [95% CI] | own forget ratio | basis | forget acc | relearn recovery | NF4 recovery | paraphrase ratio | paper CAD |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for c in cells:
        if c["label"] != "method":
            continue
        s, t = c["summary"], c["truth"]
        L.append(f"| {c['name']} | {c['verdict']} | {_f(c['score'])} {_f(s['erasure_score_ci'])} | {_f(s['own_forget_ratio'])} | "
                 f"{_f(s['basis'])} | {_f(t['acc']['forget'])} | {_f(t['relearn_recovery'])} | {_f(t['nf4_recovery'])} | "
                 f"{_f(t['paraphrase_ratio'])} | {_f(c['cad_value'])} |")
    m = summ["methods"]
    L += ["", f"{m['models']} unlearned-model runs, {m['distinct']} distinct models (runs that stopped at the same weights "
          f"counted once), verdicts {m['verdicts']}; {m['forgot']} forgot (own margin dropped by > 25%). Correlations over "
          "those (bootstrap over models, 2000 resamples; partial = controlling for the forget drop):", "",
          "| score vs ground truth | Spearman ρ | 95% CI | n |", "|---|---|---|---|"]
    for k, v in (summ.get("spearman") or {}).items():
        L.append(f"| {k} | {_f(v['rho'])} | {_f(v['ci'])} | {v['n']} |")
    L += ["", "## Targets of issue 12", "", "| target | measured | met |", "|---|---|---|"]
    ev = summ["auroc"]["evaluation (split B)"]
    L.append(f"| AUROC erasure vs suppression ≥ 0.97 (evaluation controls) | {_f(ev['erasure_score'], 3)} "
             f"(n = {ev['n_erasure']} + {ev['n_suppression']}) | {_met(ev['erasure_score'], lambda x: x >= 0.97)} |")
    rate = b["called_erasure"] / b["models"] if b["models"] else None
    L.append(f"| benign edits called erasure ≤ 5% | {b['called_erasure']}/{b['models']} = {_f(rate, 3)} | {_met(rate, lambda x: x <= 0.05)} |")
    for c in cells:
        if c["name"] in ("A-control-oracle-same-init", "B-control-oracle-same-init"):
            L.append(f"| gold retrain oracle called erasure ({c['split']}: retrained from scratch) | {c['verdict']} | {_met(c['verdict'], lambda x: x == 'erasure')} |")
        if c["name"] in ("T-control-oracle-finetuned", "U-control-oracle-finetuned"):
            L.append(f"| gold retrain oracle called erasure ({c['split']}: fine-tuned from the pretrained model M₀ was fine-tuned from) | {c['verdict']} | {_met(c['verdict'], lambda x: x == 'erasure')} |")
        if c["name"].endswith("-control-late-ascent"):
            L.append(f"| late-layer ascent called suppression ({c['split']}) | {c['verdict']} | {_met(c['verdict'], lambda x: x == 'suppression')} |")
    sp = (summ.get("spearman") or {}).get("erasure_score_vs_relearn")
    pp = (summ.get("spearman") or {}).get("erasure_score_vs_relearn_partial_forget_drop")
    if sp:
        L.append(f"| ≥ 30 unlearned models | {m['distinct']} distinct ({m['forgot']} forgot) | {_met(m['distinct'], lambda x: x >= 30)} |")
        L.append(f"| Spearman(E, relearn recovery) ≤ −0.6, CI excluding 0 | {_f(sp['rho'])} {_f(sp['ci'])} (n = {sp['n']}) | "
                 f"{_met(sp, lambda x: x['rho'] <= -0.6 and x['ci'][1] < 0)} |")
    if pp:
        L.append(f"| ... controlling for the forget drop | {_f(pp['rho'])} {_f(pp['ci'])} | {_met(pp, lambda x: x['ci'][1] < 0)} |")
    cost = Path("docs/results/cad_cost_smollm2.json")
    if cost.is_file():   # benchmarks/cad_cost.py: one CAD call in units of one EAP-IG attribution, side by side
        calls = json.loads(cost.read_text())["calls"]
        worst = max(calls, key=lambda c: c["ratio"])
        L.append("| CAD ≤ 10× one EAP-IG attribution (SmolLM2, `benchmarks/cad_cost.py`) | "
                 + ", ".join(f"{c['model']} {c['ratio']:.1f}×" for c in calls)
                 + f" | {_met(worst['ratio'], lambda x: x <= 10)} |")
    full = Path("docs/results/cad_verify_cost_smollm2.json")
    if full.is_file():   # benchmarks/cad.py --verify-only: a whole verify given the circuit, same unit
        v = json.loads(full.read_text())
        warm = v.get("verify_with_base_reference_over_attribution")
        L.append("| full `verify` given the base circuit ≤ 10× one EAP-IG attribution (`benchmarks/cad.py`) | "
                 f"{v['verify_over_attribution']:.1f}× cold; "
                 + (f"{warm:.1f}× with `--base-reference`" if warm is not None else "reference not measured")
                 + f" | cold {_met(v['verify_over_attribution'], lambda x: x <= 10)}, with the reference "
                 + (_met(warm, lambda x: x <= 10) if warm is not None else "–") + " |")
    page.write_text("\n".join(L) + "\n")
    curves = {c["name"]: c["summary"] for c in cells if c["label"] != "method" and c["split"] == "B"}
    rocs = {"E": _roc(cells, "score"), "paper CAD": _roc(cells, "cad_value")}
    save_html_many([plot_roc(rocs), plot_hybrid_recovery(curves)], out / "figures.html")
    print(json.dumps(summ, indent=1))


def _tried(text: str, columns: list[str], rows: list[list[str]]) -> list[str]:
    """A "Tried: …" paragraph of the report and its table."""
    return ["", text, "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns),
            *("| " + " | ".join(r) + " |" for r in rows)]


def _met(x: Any, ok: Any) -> str:
    return "–" if x is None else ("yes" if ok(x) else "**no**")


def _cal_text(cal: dict[str, Any]) -> str:
    parts = []
    for k, v in cal.items():
        if isinstance(v, dict):
            parts.append(f"{k.upper()} = {v['midpoint']:.3f} (" + ", ".join(f"{a} {b:.3f}" for a, b in v.items() if a != "midpoint") + ")")
    return "; ".join(parts) or "not run"


def _roc(cells: list[dict[str, Any]], key: str) -> list[tuple[float, float]]:
    rows = [c for c in cells if "-control-" in c["name"] and c["label"] in ("erasure", "suppression")]
    pts = [(0.0, 0.0)]
    for th in sorted({c[key] for c in rows}, reverse=True):
        pos = [c for c in rows if c["label"] == "erasure"]
        neg = [c for c in rows if c["label"] == "suppression"]
        tpr = sum(c[key] >= th for c in pos) / max(1, len(pos))
        fpr = sum(c[key] >= th for c in neg) / max(1, len(neg))
        pts.append((fpr, tpr))
    return pts + [(1.0, 1.0)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stage", default="all", choices=["calibrate", "evaluate", "pretrained", "methods", "report", "all"])
    ap.add_argument("--out", default="docs/results/cad_validation")
    ap.add_argument("--splits", default="B,A", help="splits for the methods stage, in order")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--page", default="docs/cad-validation.md")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    cmd = "python " + " ".join(sys.argv)
    log = out / "command.txt"
    seen = log.read_text().splitlines() if log.exists() else []
    if cmd not in seen:
        log.write_text("\n".join([*seen, cmd]) + "\n")
    if a.stage in ("calibrate", "all"):
        controls(out, "A")
    if a.stage in ("evaluate", "all"):
        controls(out, "B")
    if a.stage in ("pretrained", "all"):
        controls(out, "T")
        controls(out, "U")
    if a.stage in ("methods", "all"):
        for split in a.splits.split(","):
            methods(out, split)
    if a.stage in ("report", "all"):
        report(out, Path(a.page))


if __name__ == "__main__":
    main()
