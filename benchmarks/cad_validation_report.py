"""The report of ``benchmarks/cad_validation.py``: calibration rule, separation, correlations with the
ground truth and the Markdown page docs/cad-validation.md, all computed from the stored cells (every
verdict recomputed from the stored evidence with the thresholds in force)."""

import json
import statistics
from pathlib import Path
from typing import Any

PAIR = ("T", "U")
WORLDS = {"tiny-facts (A, B)": ("A", "B"), "pretrained pair (T, U)": PAIR}


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
      forget);
    * PI_MAX = midpoint of (highest presence CI upper bound among erasure controls that pass the basis
      check, lowest presence CI lower bound among suppression controls — the mid-depth gate included: it is
      the one suppression control whose answer is gated inside the depth, the case presence is for)."""
    a = {c["name"].split("-control-", 1)[1]: c["summary"] for c in cells if c["name"].startswith("A-control-")}
    separate = {k for k in a if k.startswith(("oracle", "retrain"))}
    sup = [s for k, s in a.items() if k.startswith(("readout", "late"))]
    era = [s for k, s in a.items() if k in ("subject-erasure", "early-ascent")]
    unch = [s for k, s in a.items() if k.startswith("retrain")]
    forgot = [s for k, s in a.items() if not k.startswith("retrain")]
    out: dict[str, Any] = {"controls": sorted(a)}
    gates = sup + [s for k, s in a.items() if k == "mid-ascent"]
    era_p = [s for s in era if s.get("presence_ci")]
    if gates and era_p and all(s.get("presence_ci") for s in gates):
        hi_p, lo_p = max(s["presence_ci"][1] for s in era_p), min(s["presence_ci"][0] for s in gates)
        out["pi_max"] = {"erasure_max_upper": hi_p, "suppression_min_lower": lo_p, "midpoint": (hi_p + lo_p) / 2}
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
        out["spearman"] = _spearmans(ok)
        # the two fact worlds differ in how relearnable every method's forgetting is: a pooled correlation
        # mixes that difference between worlds with the one the score claims to predict within a world
        out["spearman_by_world"] = {w: _spearmans(sub) for w, sp in WORLDS.items()
                                    if len(sub := [c for c in ok if c["split"] in sp]) >= 4}
        out["relearn_by_verdict"] = {}
        for v in sorted({c["verdict"] for c in ok}):
            r = sorted(c["truth"]["relearn_recovery"] for c in ok if c["verdict"] == v)
            out["relearn_by_verdict"][v] = {"n": len(r), "median": statistics.median(r), "min": r[0], "max": r[-1]}
    return out



def _spearmans(ok: list[dict[str, Any]]) -> dict[str, Any]:
    e = [c["score"] for c in ok]
    rec = [c["truth"]["relearn_recovery"] for c in ok]
    drop = [c["truth"]["forget_drop"] for c in ok]
    cadv = [c["cad_value"] for c in ok]
    nf4 = [c for c in ok if c["truth"]["nf4_recovery"] is not None]
    return {"erasure_score_vs_relearn": boot_spearman(e, rec),
            "erasure_score_vs_relearn_partial_forget_drop": boot_spearman(e, rec, drop),
            "paper_cad_vs_relearn": boot_spearman(cadv, rec),
            "paper_cad_vs_relearn_partial_forget_drop": boot_spearman(cadv, rec, drop),
            "erasure_score_vs_nf4": boot_spearman([c["score"] for c in nf4], [c["truth"]["nf4_recovery"] for c in nf4]),
            "erasure_score_vs_paraphrase": boot_spearman(e, [c["truth"]["paraphrase_ratio"] for c in ok]),
            "presence_vs_relearn": boot_spearman([c["summary"].get("presence", float("nan")) for c in ok], rec)}


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
        c["verdict"] = _verdict(c["summary"])
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
                    "Thresholds (the midpoint rule of `calibrate` in the script, applied to the split-A controls only). "
                    "Their history, because none of the evaluation sets is fully blind any more: the rule was written after "
                    "the first split-B method cells had been computed, and KEEP was updated once the last split-A control "
                    "finished; E_MIN was re-derived by the same rule (0.18 → 0.12) when the erasure score changed to format "
                    "cad/3 (interior layers only), a change prompted by the split-T controls (a last-block ascent called "
                    "erasure under cad/2); PI_MAX was added with format cad/4 (answer presence) after the mid-depth gate had "
                    "been called erasure on T and U under cad/3, with split A's mid-depth gate as its calibration "
                    "control, so the B, T and U mid-depth gates were seen before the rule existed. Every cell on this page "
                    "was recomputed under cad/4 in one run on one machine (the tiny worlds are not bit-reproducible across "
                    "CPUs, so cells from different machines are different instances of the same recipe), and every verdict "
                    "is recomputed from the stored evidence with the constants in force: "
                    f"KEEP = {vmod.KEEP}, "
                    f"BASIS_MIN = {vmod.BASIS_MIN}, E_MIN = {vmod.E_MIN}, PI_MAX = {vmod.PI_MAX}, P_MIN = {vmod.P_MIN}. The calibration rule "
                    f"(`calibrate` in the script) on the split-A controls gives: {_cal_text(summ['calibration'])}.", "",
                    "## Known-label controls", "",
                    "| control | label | verdict | E [95% CI] | Π [95% CI] | own forget ratio | basis | benign pct | hybrid R_L (forget), L = 0..n | relearn recovery | paper CAD (z) |",
                    "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in cells:
        if c["label"] == "method":
            continue
        s, t = c["summary"], c.get("truth") or {}
        L.append(f"| {c['name']} | {c['label']} | **{c['verdict']}** | {_f(c['score'])} {_f(s['erasure_score_ci'])} | "
                 f"{_f(s.get('presence'))} {_f(s.get('presence_ci'))} | "
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
    L += _mid_depth(cells)
    L += ["", "## Separation", "", "| scope | AUROC erasure vs suppression (E) | AUROC (paper CAD) | n erasure | n suppression |",
          "|---|---|---|---|---|"]
    for k, v in summ["auroc"].items():
        L.append(f"| {k} | {_f(v['erasure_score'])} | {_f(v['paper_cad'])} | {v['n_erasure']} | {v['n_suppression']} |")
    b = summ["benign"]
    L += ["", f"Benign edits (matched random-sign, one per control and per unlearned model): {b['called_erasure']} of "
          f"{b['models']} called `erasure`; verdicts {b['verdicts']}. Benign-null draws inside every CAD run: "
          f"{b['null_draws_above_e_min']} of {b['null_draws']} have E > E_MIN.", "",
          "## Unlearned models", "",
          "| model | verdict | E [95% CI] | Π [95% CI] | own forget ratio | basis | forget acc | relearn recovery | NF4 recovery | paraphrase ratio | paper CAD |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in cells:
        if c["label"] != "method":
            continue
        s, t = c["summary"], c["truth"]
        L.append(f"| {c['name']} | {c['verdict']} | {_f(c['score'])} {_f(s['erasure_score_ci'])} | "
                 f"{_f(s.get('presence'))} {_f(s.get('presence_ci'))} | {_f(s['own_forget_ratio'])} | "
                 f"{_f(s['basis'])} | {_f(t['acc']['forget'])} | {_f(t['relearn_recovery'])} | {_f(t['nf4_recovery'])} | "
                 f"{_f(t['paraphrase_ratio'])} | {_f(c['cad_value'])} |")
    m = summ["methods"]
    L += ["", f"{m['models']} unlearned-model runs, {m['distinct']} distinct models (runs that stopped at the same weights "
          f"counted once), verdicts {m['verdicts']}; {m['forgot']} forgot (own margin dropped by > 25%). Correlations over "
          "those (bootstrap over models, 2000 resamples; partial = controlling for the forget drop):", "",
          "| score vs ground truth | Spearman ρ | 95% CI | n |", "|---|---|---|---|"]
    for k, v in (summ.get("spearman") or {}).items():
        L.append(f"| {k} | {_f(v['rho'])} | {_f(v['ci'])} | {v['n']} |")
    if summ.get("spearman_by_world"):
        L += ["", "The pooled correlations mix two populations: the same methods forget far less relearnably in the "
              "pretrained-pair world (where the forget facts were learnt in the fine-tune) than in tiny-facts, and get "
              "higher E there. Within each world (the comparison the score claims to predict):", "",
              "| world | score vs ground truth | Spearman ρ | 95% CI | n |", "|---|---|---|---|---|"]
        for w, sp in summ["spearman_by_world"].items():
            for k, v in sp.items():
                L.append(f"| {w} | {k} | {_f(v['rho'])} | {_f(v['ci'])} | {v['n']} |")
    if summ.get("relearn_by_verdict"):
        L += ["", "Relearning recovery of the unlearned models that forgot, by verdict (gold oracles for comparison: "
              + ", ".join(f"{c['name']} {_f((c.get('truth') or {}).get('relearn_recovery'))}" for c in cells if "oracle" in c["name"]) + "):", "",
              "| verdict | n | median | min | max |", "|---|---|---|---|---|"]
        for v, d in summ["relearn_by_verdict"].items():
            L.append(f"| {v} | {d['n']} | {_f(d['median'])} | {_f(d['min'])} | {_f(d['max'])} |")
    L += _reliability(out / "relearn_reliability.json")
    gt = _gradient_transfer(out / "gradient_transfer.json")
    L += gt
    L += ["", "## Targets of issue 12", "", "| target | measured | met |", "|---|---|---|"]
    for scope, ev in summ["auroc"].items():
        if scope.startswith("evaluation") and ev["erasure_score"] is not None:
            L.append(f"| AUROC erasure vs suppression ≥ 0.97 ({scope}) | {_f(ev['erasure_score'], 3)} "
                     f"(n = {ev['n_erasure']} + {ev['n_suppression']}) | {_met(ev['erasure_score'], lambda x: x >= 0.97)} |")
    rate = b["called_erasure"] / b["models"] if b["models"] else None
    L.append(f"| benign edits called erasure ≤ 5% | {b['called_erasure']}/{b['models']} = {_f(rate, 3)} | {_met(rate, lambda x: x <= 0.05)} |")
    for c in cells:
        if c["name"] in ("A-control-oracle-same-init", "B-control-oracle-same-init"):
            L.append(f"| gold retrain oracle called erasure ({c['split']}: retrained from scratch) | {c['verdict']} | {_met(c['verdict'], lambda x: x == 'erasure')} |")
        if c["name"] in ("T-control-oracle-finetuned", "U-control-oracle-finetuned"):
            L.append(f"| gold retrain oracle called erasure ({c['split']}: fine-tuned from the pretrained model M₀ was fine-tuned from) | {c['verdict']} | {_met(c['verdict'], lambda x: x == 'erasure')} |")
        if c["name"].endswith("-control-mid-ascent"):
            role = "calibration control of PI_MAX" if c["split"] == "A" else "evaluation, not blind: seen under cad/3"
            L.append(f"| mid-depth ascent called suppression ({c['split']}; {role}) | {c['verdict']} | {_met(c['verdict'], lambda x: x == 'suppression')} |")
        if c["name"].endswith("-control-late-ascent"):
            L.append(f"| late-layer ascent called suppression ({c['split']}) | {c['verdict']} | {_met(c['verdict'], lambda x: x == 'suppression')} |")
    if summ.get("spearman"):
        L.append(f"| ≥ 30 unlearned models | {m['distinct']} distinct ({m['forgot']} forgot) | {_met(m['distinct'], lambda x: x >= 30)} |")
    for scope, sps in [("pooled over both worlds (confounded by world)", summ.get("spearman") or {}),
                       *((f"within {w}", v) for w, v in (summ.get("spearman_by_world") or {}).items())]:
        sp, pp = sps.get("erasure_score_vs_relearn"), sps.get("erasure_score_vs_relearn_partial_forget_drop")
        if sp and pp:
            L.append(f"| Spearman(E, relearn recovery) ≤ −0.6, CI excluding 0, {scope} | {_f(sp['rho'])} {_f(sp['ci'])} (n = {sp['n']}); "
                     f"partial on the forget drop {_f(pp['rho'])} {_f(pp['ci'])} | "
                     + ("not a test (between-world difference)" if scope.startswith("pooled") else
                        _met((sp, pp), lambda x: x[0]['rho'] <= -0.6 and x[0]['ci'][1] < 0 and x[1]['ci'][1] < 0)) + " |")
    L += _bench_targets(Path("docs/results/cad_predictors_smollm2.json"))
    L += _families_target(Path("docs/results/cad_predictors_families.json"))
    L += _pooled_targets(Path("docs/results/cad_predictors_smollm2_all.json"),
                         Path("docs/results/cad_predictors_prereg_suppression.json"))
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
    rl = Path("docs/results/cad_verify_cost_with_relearn_smollm2.json")
    if rl.is_file():   # the same benchmark after verify's relearning attack became the default
        v = json.loads(rl.read_text())
        L.append("| the same, with the relearning attack `verify` runs by default (`" + v["command"] + "`, "
                 f"1-min load {v['run_info']['load_average_1min']:.1f}) | without the attack "
                 f"{v['verify_over_attribution']:.1f}× cold, {v['verify_with_base_reference_over_attribution']:.1f}× "
                 f"with the reference; with it {v['default_verify_over_attribution']:.1f}× cold (base curve "
                 f"{v['relearn_base_curve_seconds']:.0f} s + attack {v['relearn_attack_seconds']:.0f} s), "
                 f"{v['default_verify_with_base_reference_over_attribution']:.1f}× with the reference (attack only) | "
                 "with the reference " + _met(v["default_verify_with_base_reference_over_attribution"], lambda x: x <= 10)
                 + ", cold " + _met(v["default_verify_over_attribution"], lambda x: x <= 10) + " |")
    if gt:
        g = json.loads((out / "gradient_transfer.json").read_text())["worlds"]
        L.append("| a gradient-transfer score G predicts relearning, sign + fixed before measuring "
                 "(`benchmarks/cad_gradient_transfer.py`) | "
                 + "; ".join(f"{w} {_f(st['G']['mean']['value'])} {_f([st['G']['mean']['lo'], st['G']['mean']['hi']])}"
                             for w, st in g.items())
                 + " | " + _met(all(st["G"]["mean"]["lo"] > 0 for st in g.values()), lambda x: x) + " |")
    page.write_text("\n".join(L) + "\n")
    curves = {c["name"]: c["summary"] for c in cells if c["label"] != "method" and c["split"] == "B"}
    rocs = {"E": _roc(cells, "score"), "paper CAD": _roc(cells, "cad_value")}
    save_html_many([plot_roc(rocs), plot_hybrid_recovery(curves)], out / "figures.html")
    print(json.dumps(summ, indent=1))


def _mid_depth(cells: list[dict[str, Any]]) -> list[str]:
    """The page section on the mid-depth gate and answer presence Π (read from every cell)."""
    ctl = [c for c in cells if "-control-" in c["name"] and c["label"] in ("erasure", "suppression")]
    changed = [(c, v) for c in cells if (v := _verdict(c["summary"], presence=False)) != c["verdict"]]
    met = [c for c in cells if c["label"] == "method"]
    out = ["", "## A gate at mid depth, and answer presence", "",
           "The `mid-ascent` controls (gradient ascent with a retain term on block n/2 only; embedding and blocks "
           "< n/2 bit-identical to M₀) are suppression by construction: M₁'s residual before the edited block *is* "
           "M₀'s, and it already carries the answer. The erasure score cannot see that: below an edit every hybrid "
           "recovers whether the edit gates the answer or deletes it, so a gate at depth k scores the depth after k, "
           "like an erasure at k (under format cad/3 the gate was called `erasure` on the pretrained pair). "
           "**Answer presence** Π (format cad/4, `circuitforge.cad.presence`) asks whether the answer M₀ writes at the "
           "interior layers is still written in M₁'s residual, read with a linear lens fitted on M₀ over texts that "
           "are not the forget rows (a linear lens cannot recall a fact, only read one that is there): per layer "
           "P_L = lens margin on M₁ ÷ lens margin on M₀, weighted by how much of its final margin M₀ has written at L. "
           "The verdict calls suppression when Π's CI lower bound is ≥ PI_MAX and erasure only when its upper bound "
           "is below it (rules 3–4 of `circuitforge/cad/verdict.py`).", "",
           "| control | label | verdict | E [95% CI] | Π [95% CI] | P_L (forget), L = 0..n | relearn recovery |",
           "|---|---|---|---|---|---|---|"]
    for c in ctl:
        s = c["summary"]
        out.append(f"| {c['name']} | {c['label']} | **{c['verdict']}** | {_f(c['score'])} {_f(s['erasure_score_ci'])} | "
                   f"{_f(s.get('presence'))} {_f(s.get('presence_ci'))} | {_f(s.get('presence_per_layer'))} | "
                   f"{_f((c.get('truth') or {}).get('relearn_recovery'))} |")
    rel = lambda rs: statistics.median([r["truth"]["relearn_recovery"] for r in rs if r["truth"]["relearn_recovery"] is not None]) if rs else None  # noqa: E731
    ch_m = [c for c, _ in changed if c["label"] == "method"]
    out += ["", f"What Π changes: {len(changed)} of {len(cells)} models get another verdict than the same evidence "
            "without Π would give: " + (", ".join(f"{c['name']} ({v} → {c['verdict']})" for c, v in changed if c["label"] != "method") or "no control")
            + f"; {len(ch_m)} of {len(met)} unlearned-model runs"
            + (f" (relearning recovery median {_f(rel([c for c in ch_m if c['truth']['forgot']]))} among those that forgot)" if ch_m else "")
            + "."]
    return out


def _verdict(s: dict[str, Any], presence: bool = True) -> str:
    """The verdict from a cell's stored evidence (``summary``) and the thresholds in force; without the
    presence rules when ``presence`` is False."""
    from circuitforge.cad.verdict import decide

    return decide(s["own_forget_ratio"], s["own_forget_ratio_ci"], s["basis"], s["erasure_score"], s["erasure_score_ci"],
                  s["benign_percentile"], s.get("presence") if presence else None,
                  s.get("presence_ci") if presence else None).verdict


def _erasure_row(path: Path, key: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """A ``benchmarks/cad_predictors.py`` JSON and its row for the erasure score E (``None`` when the file is
    missing or the row has no ``key`` estimate)."""
    if not path.is_file():
        return {}, None
    d = json.loads(path.read_text())
    row = {r["feature"]: r for r in d["table"]}.get("erasure_score")
    return d, row if row and key in row else None


def _bench_targets(path: Path) -> list[str]:
    """Target rows for the out-of-sample population: the SmolLM2 benchmark's runs
    (``benchmarks/cad_predictors.py``; none of them seen when the thresholds were fixed)."""
    d, row = _erasure_row(path, "spearman")
    if row is None:
        return []
    sp, pp = row["spearman"], row["partial_spearman_forget_drop"]
    L = [f"| Spearman(E, relearn recovery) ≤ −0.6, CI excluding 0, SmolLM2 benchmark runs (out of sample, "
         f"`{d['command']}`) | {est(sp)} (n = {row['n']}); partial on the forget drop {est(pp)} | "
         + _met((sp, pp), lambda x: x[0]["value"] <= -0.6 and x[0]["hi"] < 0 and x[1]["hi"] < 0) + " |"]
    return L + _verdict_diff_row(d, "erasure", "relearn less than the rest (same runs)", lambda x: x["hi"] < 0)


def _verdict_diff_row(d: dict[str, Any], verdict: str, claim: str, met: Any) -> list[str]:
    """The row of ``by_verdict``'s ``<verdict>_minus_rest`` (mean recovery, that verdict − every other run) of a
    ``benchmarks/cad_predictors.py`` JSON, judged by ``met`` on the difference; none when it was not measured."""
    diff = (d.get("by_verdict") or {}).get(f"{verdict}_minus_rest") or {}
    if diff.get("value") is None:
        return []
    return [f"| runs called `{verdict}` {claim} | mean recovery difference {est(diff)} "
            f"({diff[f'n_{verdict}']} vs {diff['n_rest']} runs) | {_met(diff, met)} |"]


def _pooled_targets(pooled: Path, prereg: Path) -> list[str]:
    """Target rows for every SmolLM2 benchmark run pooled (the main benchmark and its same-split variants), and
    the pre-registered test of the ``suppression`` calls on runs made after it was written (docs/cad.md)."""
    d, row = _erasure_row(pooled, "within_split_spearman")
    if row is None:
        return []
    sp, ws = row["spearman"], row["within_split_spearman"]
    L = [f"| Spearman(E, relearn recovery) ≤ −0.6, CI excluding 0, all SmolLM2 benchmark runs pooled (`{d['command']}`) | "
         f"{est(sp)} (n = {row['n']}); within a split {est(ws)} | " + _met(sp, lambda x: x["value"] <= -0.6 and x["hi"] < 0) + " |"]
    for doc, scope in ((d, "the same runs"), (_read(prereg), "pre-registered, runs made after the hypothesis")):
        if doc is not None:
            L += _verdict_diff_row(doc, "suppression", f"relearn more than the rest ({scope}; evidence, not one of "
                                   "the issue's targets)", lambda x: x["lo"] > 0)
    return L


def _families_target(path: Path) -> list[str]:
    """The target row for the runs of every benchmarked model family, each run ranked among its own model's
    runs (``within_model_spearman`` of ``benchmarks/cad_predictors.py``)."""
    d, row = _erasure_row(path, "within_model_spearman")
    if row is None:
        return []
    w = row["within_model_spearman"]
    per = ", ".join(f"{m} {n}" for m, n in d["runs_per_model"].items())
    return [f"| Spearman(E, relearn recovery) ≤ −0.6, CI excluding 0, every family's benchmark runs, ranked within "
            f"their model (out of sample, `{d['command']}`) | {est(w)} "
            f"(n = {row['n']}: {per}) | " + _met(w, lambda x: x["value"] <= -0.6 and x["hi"] < 0) + " |"]


def _read(path: Path) -> dict[str, Any] | None:
    """A benchmark's JSON when it has been run (``None`` leaves its section out of the page)."""
    return json.loads(path.read_text()) if path.is_file() else None


def est(e: dict[str, Any]) -> str:
    """An estimate as ``value [lo, hi]``."""
    return f"{_f(e['value'])} {_f([e['lo'], e['hi']])}"


def _reliability(path: Path) -> list[str]:
    """The section on how reliable the relearning truth is (``benchmarks/cad_relearn_reliability.py``)."""
    d = _read(path)
    if d is None:
        return []
    L = ["", "## How reliable the relearning truth is", "",
         f"`{d['command']}` rebuilt every unlearned model above that forgot (each reproduced its stored recovery to "
         "1e-3 on the machine of that run; on another machine they do not, see the next section) and attacked it a second time with other attacker data: the same attack (three budgets, best kept) "
         "fine-tuning on the *other* forget split's rows instead of rows 32–47 (A, T models: rows 16–31; B, U: rows "
         "0–15). Test–retest = Spearman between the two recoveries over models; split-half = even vs odd forget "
         "rows, Spearman–Brown corrected; rel(score) = 1 − mean(se²) ÷ var(score) from the stored bootstrap CIs "
         "(negative: the row-sampling noise exceeds the spread between models); ceiling = √(rel(E) · rel(recovery)), "
         "the largest |ρ| a perfect ranking could show against a truth this noisy (rel(recovery) from its row "
         "bootstrap, which leaves out the attacker-set variance that test–retest measures, so the ceiling is "
         "optimistic).", "",
         "| world | n | test–retest ρ (set 1 vs set 2) | split-half (S–B) | rel(recovery) | rel(E) | rel(Π) | "
         "ceiling for E | ρ(E, set 1) | ρ(E, set 2) | ρ(E, mean of both) | ρ(Π, mean) |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for w, st in d["worlds"].items():
        rel, c = st["reliability"], st["correlations"]
        L.append(f"| {w} | {st['n']} | {est(st['test_retest'])} | {_f(st['split_half_spearman_brown'])} | "
                 f"{_f(rel['recovery_set1'])} | {_f(rel['E'])} | {_f(rel['presence'])} | {_f(st['ceiling']['E'])} | "
                 f"{est(c['E_vs_set1'])} | {est(c['E_vs_set2'])} | {est(c['E_vs_mean'])} | {est(c['presence_vs_mean'])} |")
    L += ["", "Reading: which facts the attacker trains on changes how models rank on relearning (test–retest well "
          "below 1), so a within-world ρ ≤ −0.6 against one attacker set is near or beyond what even a perfect score "
          "could show. In tiny-facts E has no between-model signal at all (its CIs are wider than its spread; every "
          "model there is `indeterminate`), so no ρ with E is interpretable there. In the pretrained pair E is "
          "reliable and its correlation with relearning is positive on set 1 and near zero on set 2: the sign is not "
          "the predicted one on either set. The within-world target stays missed; this section says how much of it "
          "a better score could recover."]
    return L


def _gradient_transfer(path: Path) -> list[str]:
    """The section on the gradient-transfer scores (``benchmarks/cad_gradient_transfer.py``) and on how the
    relearning truth carries across machines."""
    d = _read(path)
    if d is None:
        return []
    L = ["", "## Tried: gradient transfer, a score no forward pass gives (and the truth across machines)", "",
         f"`{d['command']}`. Relearning on *disjoint* same-domain facts restores the targets when what the unlearning "
         "removed is shared by the facts — a gate that training on any of them undoes — which is a statement about "
         "M₁'s gradients, not its forward pass. Scores on M₁ from the forget rows only (no attacker data): the "
         "**transfer cosine G** = cos(g_even, g_odd) between the answer-NLL gradients (every parameter) of the even "
         "and the odd forget rows — the primary score, its predicted sign (+: more transfer, more relearning) fixed "
         "in the script before any correlation was computed; the first-order transfer ratio T = g_even·g_odd ÷ "
         "½(|g_even|² + |g_odd|²); the reversal cosine V = cos(−g, θ₀ − θ₁). Truth: every distinct unlearned model "
         "of the validation rebuilt and attacked twice in that run (set 1 = the validation's attacker rows, set 2 = "
         "another disjoint set of same-domain facts).", "",
         "| world | n | ρ(G, set 1) | ρ(G, set 2) | ρ(G, mean) | ρ(G, mean), partial on the forget drop | ρ(T, mean) | "
         "ρ(V, mean) | test–retest (set 1 vs set 2) |", "|---|---|---|---|---|---|---|---|---|"]
    for w, st in d["worlds"].items():
        g = st["G"]
        L.append(f"| {w} | {st['n']} | {est(g['set1'])} | {est(g['set2'])} | {est(g['mean'])} | "
                 f"{est(g['mean_partial_forget_drop'])} | {est(st['T']['mean'])} | {est(st['V']['mean'])} | "
                 f"{est(st['test_retest_set1_set2'])} |")
    L += ["", "Reading: the hypothesis is **refuted**. In tiny-facts G relates to relearning with the *opposite* of "
          "the predicted sign, on both attacker sets and after partialling the forget drop; in the pretrained pair — "
          "the world whose models share the base's basis, as real unlearned checkpoints do — it has no relation, so "
          "the tiny-facts sign does not replicate and cannot be adopted after the fact. Neither T nor V does better. "
          "Nothing here feeds the verdict.", "",
          "**The relearning truth does not carry across machines.** The tiny worlds are trained on first use; "
          "trained on the machine of that run (same `circuitforge/models/tiny.py`), the base model's mean forget "
          "margin was " + ", ".join(f"{m['here']:.2f} (split {k}; stored cells {m['stored']:.2f})"
                                    for k, m in d.get("base_margin", {}).items())
          + ", and the methods' early stops land elsewhere. The same (method, strength) models then rank differently on relearning "
          "(Spearman of the recovery measured there with the stored one):", "",
          "| world | recovery, set 1 | recovery, set 2 | edited forget margin |", "|---|---|---|---|"]
    for w, st in d["worlds"].items():
        am = st["across_machines"]
        L.append(f"| {w} | {est(am['recovery_set1'])} | {est(am['recovery_set2'])} | {est(am['margin_edited'])} |")
    L += ["", "The edited margins agree and the two attacker sets agree with each other on one machine (test–retest "
          "above), but which model relearns more is, in these worlds, largely a property of the particular trained "
          "world rather than of the method and its strength. A within-world correlation with relearning found on one "
          "machine's world — the reliability section above included — is not a stable property to validate a score "
          "against. (The JSON's `E_stored` rows pair the earlier machine's E with truths measured on other models "
          "and are not interpreted.)"]
    return L


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
