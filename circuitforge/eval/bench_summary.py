"""The benchmark's summary: every column pooled over resampled splits with paired bootstrap 95% CIs, the four
properties judged on CI bounds, the paper's claims (a)–(e) with CIs and paired tests, and the Markdown.

Conventions (all estimates from :mod:`circuitforge.eval.stats`):

* item columns (accuracies, drops, PTQ gap, recoveries) pool the per-row outcomes of every cell of a
  method; the bootstrap resamples cells (a split × seed), then rows within each cell, and every
  difference is paired row by row with the base model on the same split (``splits/<name>.json``);
* cell columns (CAD value and z, erasure share, NF4 diagnostics, seconds) resample cells;
* a property passes when the whole CI clears its threshold, fails when the whole CI misses it, and is
  ``undecided`` otherwise; structural erasure is the share of cells whose CAD verdict is ``erasure``,
  judged against 0.5 (a majority of splits);
* relearning recovery is pooled per attacker budget and the budget with the highest pooled recovery is
  reported (the attacker's choice); the never-known floor enters each cell as a constant (its own
  sampling error is reported in ``relearn floor``, not propagated).
"""

import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from circuitforge.eval.relearn import best_recovery, recovery_draws
from circuitforge.eval.stats import (
    Estimate,
    judge,
    mcnemar,
    mean,
    mean_diff,
    paired_bootstrap_p,
    ratio_of_means,
    spearman_ci,
)

PROPS = ("forgetting", "retain", "ptq_gap", "structural_erasure")
GRADIENT = ("ga", "graddiff", "npo")


def _cols(cfg: Any) -> list[tuple[str, str]]:
    s = cfg.scheme
    return [("forget fp", "forget_acc"), (f"forget {s}", "forget_q"),
            *[(f"forget {x}", f"forget_{x}") for x in cfg.extra_schemes],
            ("forgetting", "forgetting"), ("retain drop", "retain_drop"), ("same-domain retain drop", "retain_same_drop"),
            ("targeted paraphrase acc", "paraphrase_acc"), ("paraphrase drop", "paraphrase_drop"),
            (f"PTQ gap {s}", "ptq_gap"), (f"recovery {s}", "q_recovery"), ("relearn recovery", "relearn"),
            ("relearn floor", "relearn_floor"), ("CAD", "cad_value"), ("CAD z", "cad_z"),
            ("erasure share", "erasure_share"), ("bin/|Δθ| median", "bin_ratio"), ("NF4 flip rate", "flip_rate"),
            ("share edited", "changed_share"), ("cell s", "seconds")]


def cad_current(cell: dict[str, Any]) -> bool:
    """Whether a cell's CAD evidence has the library's current format (cells made before the summary
    recorded its format are older than ``circuitforge.cad/4``)."""
    from circuitforge.cad.api import FORMAT as CAD_FORMAT

    return bool(cell["scorecard"]["cad"].get("format") == CAD_FORMAT)


def _verdict_cell(cell: dict[str, Any]) -> str:
    """The per-split table's CAD column: the verdict, with its format when that is not the current one, and
    the earlier verdict of a refreshed cell."""
    cad = cell["scorecard"]["cad"]
    v = str(cad.get("verdict"))
    if not cad_current(cell):
        return f"{v} (old format {cad.get('format', 'cad/3 or earlier').rsplit('.', 1)[-1]})"
    before = (cell.get("cad_refreshed") or {}).get("verdict_before")
    return f"{v} (was {before})" if before is not None else v


def _cellwise(cells: list[dict[str, Any]], f: Callable[[dict[str, Any]], Any]) -> Estimate:
    vals = [f(c) for c in cells]
    vals = [float(v) for v in vals if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return mean([[v] for v in vals]) if vals else Estimate(None, None, None, 0, 0)


def relearn_estimate(cells: list[dict[str, Any]], bases: dict[str, Any]) -> tuple[Estimate, int | None, Estimate]:
    """Pooled floored relearning recovery at the best budget, the budget, and the floor there."""
    if not cells:
        return Estimate(None, None, None, 0, 0), None, Estimate(None, None, None, 0, 0)
    budgets = sorted(int(b) for b in cells[0]["relearn"]["correct"]["attacked"])
    best: tuple[Estimate, int | None] = (Estimate(None, None, None, 0, 0), None)
    for b in budgets:
        num, den = [], []
        for c in cells:
            r = c["relearn"]["correct"]
            before = np.asarray(r["before"], float)
            att = np.asarray(r["attacked"][str(b)], float)
            base_att = np.asarray(bases[c["split"]]["relearn_curve"][str(b)], float)
            floor = c["relearn"]["floor_by_budget"][str(b)]
            num.append(att - before - floor)
            den.append(base_att - before)
        est = ratio_of_means(num, den)
        if est.value is not None and (best[0].value is None or est.value > best[0].value):
            best = (est, b)
    chosen = best[1]
    floor = _cellwise(cells, lambda c: c["relearn"]["floor_by_budget"].get(str(chosen)) if chosen else None)
    return best[0], chosen, floor


def method_columns(cfg: Any, cells: list[dict[str, Any]], bases: dict[str, Any]) -> tuple[dict[str, Estimate], int | None]:
    """Every column of one method (see module docstring)."""
    s = cfg.scheme

    def per(key: str, base_key: str | None = None) -> tuple[list[Any], list[Any]]:
        ed = [c["correct"][key] for c in cells]
        return ed, [bases[c["split"]][base_key or key] for c in cells]

    f_ed, f_b = per("forget")
    q_ed = [c["correct"][f"forget_{s}"] for c in cells]
    r_ed, r_b = per("retain")
    rs_ed, rs_b = per("retain_same")
    p_ed, p_b = per("paraphrase")
    out: dict[str, Estimate] = {
        "forget_acc": mean(f_ed), "forget_q": mean(q_ed), "forgetting": mean_diff(f_b, f_ed),
        "retain_drop": mean_diff(r_b, r_ed), "retain_same_drop": mean_diff(rs_b, rs_ed),
        "paraphrase_acc": mean(p_ed), "paraphrase_drop": mean_diff(p_b, p_ed), "ptq_gap": mean_diff(q_ed, f_ed),
        "q_recovery": ratio_of_means([np.subtract(q, f, dtype=float) for q, f in zip(q_ed, f_ed, strict=True)],
                                     [np.subtract(b, f, dtype=float) for b, f in zip(f_b, f_ed, strict=True)]),
    }
    for x in cfg.extra_schemes:
        out[f"forget_{x}"] = mean([c["correct"][f"forget_{x}"] for c in cells])
    out["relearn"], budget, out["relearn_floor"] = relearn_estimate(cells, bases)
    out["cad_value"] = _cellwise(cells, lambda c: c["scorecard"]["cad"].get("value"))
    out["cad_z"] = _cellwise(cells, lambda c: c["scorecard"]["cad"].get("z"))
    out["erasure_share"] = _cellwise(cells, lambda c: float(c["scorecard"]["cad"].get("verdict") == "erasure")
                                     if cad_current(c) else None)
    out["bin_ratio"] = _cellwise(cells, lambda c: c.get("median_binwidth_to_update_ratio"))
    out["flip_rate"] = _cellwise(cells, lambda c: c.get("code_flip_rate"))
    out["changed_share"] = _cellwise(cells, lambda c: c.get("changed_share"))
    out["seconds"] = _cellwise(cells, lambda c: c.get("seconds"))
    return out, budget


def properties(cols: dict[str, Estimate], th: Any) -> dict[str, dict[str, Any]]:
    """pass / fail / undecided per property from the CI bounds."""
    rules = {"forgetting": ("forgetting", th.min_forget_drop, ">="), "retain": ("retain_drop", th.max_retain_drop, "<="),
             "ptq_gap": ("ptq_gap", th.max_ptq_gap, "<="), "structural_erasure": ("erasure_share", 0.5, ">=")}
    return {p: {"call": judge(cols[k], t, d), "threshold": t, "direction": d, **cols[k].to_dict()}  # type: ignore[arg-type]
            for p, (k, t, d) in rules.items()}


def _call(lo_ok: bool, hi_bad: bool) -> str:
    return "holds" if lo_ok else "does not hold" if hi_bad else "undecided"


def compare(a: list[dict[str, Any]], b: list[dict[str, Any]], scheme: str) -> dict[str, Any]:
    """Paired method-vs-method differences (a − b) on the splits both ran (first seed of each)."""
    first = lambda cs: {c["split"]: c for c in sorted(cs, key=lambda c: c["seed"])[::-1]}  # noqa: E731
    ca, cb = first(a), first(b)
    common = sorted(set(ca) & set(cb))
    if not common:
        return {}
    out: dict[str, Any] = {"splits": common}
    for name, key in (("forget acc", "forget"), ("retain acc", "retain"), ("same-domain retain acc", "retain_same"),
                      ("targeted paraphrase acc", "paraphrase")):
        xa = [ca[s]["correct"][key] for s in common]
        xb = [cb[s]["correct"][key] for s in common]
        out[name] = {**mean_diff(xa, xb).to_dict(), "p_bootstrap": paired_bootstrap_p(xa, xb),
                     "mcnemar": mcnemar(sum(xa, []), sum(xb, [])).to_dict()}
    ga = [np.subtract(ca[s]["correct"][f"forget_{scheme}"], ca[s]["correct"]["forget"], dtype=float) for s in common]
    gb = [np.subtract(cb[s]["correct"][f"forget_{scheme}"], cb[s]["correct"]["forget"], dtype=float) for s in common]
    out[f"PTQ gap {scheme}"] = {**mean_diff(ga, gb).to_dict(), "p_bootstrap": paired_bootstrap_p(ga, gb)}
    return out


def claims(cfg: Any, table: dict[str, Any], cells: list[dict[str, Any]], th: Any,
           bases: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """The paper's claims (a)–(e), each with the estimates it rests on and holds / does not hold / undecided."""
    out: dict[str, dict[str, Any]] = {}
    grad = [m for m in GRADIENT if m in table]
    gaps = {m: table[m]["columns"]["ptq_gap"] for m in grad}
    tests = {}
    for m in grad:
        cs = [c for c in cells if c["method"] == m]
        tests[m] = mcnemar(sum((c["correct"][f"forget_{cfg.scheme}"] for c in cs), []),
                           sum((c["correct"]["forget"] for c in cs), [])).to_dict()
    out["a"] = {"claim": f"gradient baselines' forgetting recovers under {cfg.scheme} (PTQ gap > 0)",
                "measured": {"ptq_gap": gaps, "mcnemar_q_vs_fp": tests},
                "holds": None if not gaps else _call(all((g["lo"] or 0) > 0 for g in gaps.values()),
                                                     any((g["hi"] or 0) <= 0 for g in gaps.values()))}
    survivors = {m: table[m]["columns"]["forgetting"] for m in table
                 if m != "mansu" and table[m]["properties"]["ptq_gap"]["call"] == "pass"}
    out["b"] = {"claim": f"baselines whose {cfg.scheme} gap is ≤ 0 (CI) barely change the model (forget drop < 0.3)",
                "measured": {"forgetting": survivors},
                "holds": None if not survivors else _call(all((v["hi"] or 1) < 0.3 for v in survivors.values()),
                                                          any((v["lo"] or 0) >= 0.3 for v in survivors.values()))}
    ratios = {m: table[m]["columns"]["bin_ratio"] for m in grad}
    out["c"] = {"claim": "baseline updates sit 47–828× below the NF4 bin width (median bin width ÷ |Δθ|)",
                "measured": ratios,
                "holds": None if not ratios else _call(
                    all(r["lo"] is not None and 47 <= r["lo"] and (r["hi"] or 0) <= 828 for r in ratios.values()),
                    any(r["hi"] is not None and (r["hi"] < 47 or (r["lo"] or 0) > 828) for r in ratios.values()))}
    if "mansu" in table:
        calls = {p: v["call"] for p, v in table["mansu"]["properties"].items()}
        vs = {m: compare([c for c in cells if c["method"] == "mansu"], [c for c in cells if c["method"] == m], cfg.scheme)
              for m in table if m != "mansu"}
        out["d"] = {"claim": "MANSU meets all four properties (CI bounds clear every threshold)",
                    "measured": {"calls": calls, "mansu_minus": vs},
                    "holds": _call(all(v == "pass" for v in calls.values()), any(v == "fail" for v in calls.values()))}
    forgot = [c for c in cells if (c["scorecard"]["properties"]["forgetting"]["value"] or 0) >= th.min_forget_drop]
    xs, ys = [], []
    for c in forgot:
        rec = [r for r in (_q_recovery(c, cfg.scheme), c["relearn"]["recovery"]) if r is not None]
        v = c["scorecard"]["cad"].get("value")
        if rec and v is not None:
            xs.append(float(v))
            ys.append(float(np.mean(rec)))
    rho = spearman_ci(xs, ys)
    # the validated verdict's score (erasure score E) against the floored relearning recovery, raw and with
    # the forget drop partialled out (a method that forgets more may both erase more and relearn less)
    es, rl, drop = [], [], []
    forgot_current = [c for c in forgot if cad_current(c)]  # E's definition changed with the CAD format
    for c in forgot_current:
        e = c["scorecard"]["cad"].get("erasure_score")
        if e is not None and c["relearn"]["recovery"] is not None:
            es.append(float(e))
            rl.append(float(c["relearn"]["recovery"]))
            drop.append(float(c["scorecard"]["properties"]["forgetting"]["value"]))
    r_e, r_ep = spearman_ci(es, rl), spearman_ci(es, rl, zs=drop)
    rel = relearn_reliability([c for c in forgot_current if c["scorecard"]["cad"].get("erasure_score") is not None
                               and c["relearn"]["recovery"] is not None and c["split"] in (bases or {})], bases or {})
    out["verdict_score"] = {
        "claim": "the verdict's erasure score E predicts relearning: Spearman ρ(E, relearning recovery) ≤ −0.6 over "
                 "runs that forgot, its CI excluding 0, also with the forget drop partialled out",
        "measured": {"spearman": r_e.to_dict(), "partial_spearman_forget_drop": r_ep.to_dict(), "n_runs": len(es),
                     "relearn_reliability": rel},
        "holds": (_call(r_e.hi <= -0.6 and r_ep.hi < 0, r_e.lo > -0.6 or r_ep.lo >= 0)
                  if r_e.lo is not None and r_e.hi is not None and r_ep.lo is not None and r_ep.hi is not None
                  else "undecided")}
    out["e"] = {"claim": "CAD predicts recovery: negative rank correlation between CAD and normalised recovery "
                         f"(mean of {cfg.scheme} recovery ratio and floored relearning recovery) over runs that forgot",
                "measured": {"spearman": rho.to_dict(), "n_runs": len(xs), "runs_that_forgot": len(forgot)},
                "holds": "undecided" if rho.lo is None or rho.hi is None else _call(rho.hi < 0, rho.lo > 0)}
    return out


def relearn_reliability(cells: list[dict[str, Any]], bases: dict[str, Any], n_boot: int = 500,
                        seed: int = 0) -> dict[str, Any]:
    """How much of the spread of relearning recovery across runs is measurement noise of the held rows.

    Per cell, the held rows are resampled (before, attacked at every budget and the base model's attacked
    outcomes paired by row; the floor held fixed) and the best-budget recovery recomputed: its bootstrap
    variance is that cell's sampling variance. ``reliability`` = 1 − mean sampling variance ÷ variance of
    the observed recoveries across cells, and ``ceiling`` = √reliability: the largest correlation any score,
    however good, can show with the measured recovery (the classical attenuation bound) — so a target such
    as ρ ≤ −0.6 needs a true correlation of about −0.6 ÷ ceiling. The floor's own noise is not included, so
    both are upper bounds."""
    rng = np.random.default_rng(seed)
    obs, var = [], []
    for c in cells:
        r = c["relearn"]
        before = np.asarray(r["correct"]["before"], float)
        att = {b: np.asarray(v, float) for b, v in r["correct"]["attacked"].items()}
        base = {b: np.asarray(bases[c["split"]]["relearn_curve"][b], float) for b in att}
        floors = {b: float(r["floor_by_budget"][b]) for b in att}
        o = best_recovery(before, att, base, floors)
        if o is None or len(before) < 2:
            continue
        draws = recovery_draws(before, att, base, floors, n_boot, rng)
        if len(draws) >= 2:
            obs.append(o)
            var.append(float(np.var(draws, ddof=1)))
    if len(obs) < 3:
        return {"n_runs": len(obs), "reliability": None, "ceiling": None}
    between = float(np.var(obs, ddof=1))
    noise = float(np.mean(var))
    rel = 1.0 - noise / between if between > 0 else None
    return {"n_runs": len(obs), "between_run_variance": between, "mean_sampling_variance": noise,
            "reliability": rel, "ceiling": math.sqrt(rel) if rel is not None and rel > 0 else 0.0 if rel is not None else None,
            "n_boot": n_boot}


def _q_recovery(c: dict[str, Any], scheme: str) -> float | None:
    a = c["scorecard"]["accuracies"]
    den = a["base_forget"] - a["unlearned_forget"]
    q = a.get(f"unlearned_forget_{scheme}")
    return None if den <= 0 or q is None else (q - a["unlearned_forget"]) / den


def summarise(cfg: Any, cells: list[dict[str, Any]], bases: dict[str, Any]) -> dict[str, Any]:
    """Per-method columns and property calls, claims, and the base model's accuracies per split."""
    from circuitforge.eval.scorecard import Thresholds

    th = Thresholds()
    table: dict[str, Any] = {}
    for method in cfg.methods:
        cs = [c for c in cells if c["method"] == method and c["split"] in bases]
        if not cs:
            continue
        cols, budget = method_columns(cfg, cs, bases)
        table[method] = {"columns": {k: v.to_dict() for k, v in cols.items()}, "properties": properties(cols, th),
                         "relearn_budget": budget, "n_cells": len(cs), "splits": sorted({c["split"] for c in cs}),
                         "verdicts": [c["scorecard"]["cad"].get("verdict") for c in cs]}
    base = {sp: {k: (sum(v) / len(v) if v else None) for k, v in b.items() if isinstance(v, list)}
            for sp, b in bases.items()}
    return {"table": table, "claims": claims(cfg, table, cells, th, bases), "base_accuracy": base,
            "thresholds": th.__dict__}


# ------------------------------------------------------------------------------------------- markdown


def _f(e: dict[str, Any] | None, digits: int = 3) -> str:
    if not e or e.get("value") is None:
        return "–"
    v = f"{e['value']:.{digits}g}"
    return v if e.get("lo") is None else f"{v} [{e['lo']:.{digits}g}, {e['hi']:.{digits}g}]"


CALL = {"pass": "✅ pass", "fail": "❌ fail", "undecided": "❔ undecided"}


def markdown(doc: dict[str, Any]) -> str:
    """The results page (generated from the results document only)."""
    from types import SimpleNamespace

    c = doc["config"]
    cfg = SimpleNamespace(**c)
    cols = _cols(cfg)
    n_rows = f"{c['n_forget']} forget, {c['n_retain_same']} same-domain retain, {c['n_retain']} general retain rows"
    if c.get("n_retain_same_train"):
        n_rows += (f"; every method is given the general retain rows and {c['n_retain_same_train']} other "
                   "same-domain rows, so the same-domain retain rows are held out")
    else:
        n_rows += "; every method is given the general retain rows only"
    lines = [f"# Unlearning benchmark: {doc['model']}", "", f"Command: `{doc['command']}`  ",
             f"Config version {c['version']}: {doc['n_cells']} of {doc['n_cells_planned']} cells finished "
             f"(splits {', '.join(doc['splits_run']) or 'none'} of {c['n_splits']}; {n_rows} per split; "
             f"seeds {list(c['seeds'])} for stochastic methods). Compute time of the cells {doc['cell_seconds']:.0f} s "
             f"on {doc['cores']} CPU cores.", "",
             "Every number is pooled over the finished cells of a method with a two-level paired bootstrap 95% CI "
             "(cells, then rows; `eval/stats.py`); `n` and the splits are in results.json.", "",
             "| method | cells | " + " | ".join(n.replace("|", "\\|") for n, _ in cols) + " |",
             "|---|---|" + "---|" * len(cols)]
    for m, r in doc["table"].items():
        lines.append(f"| {m} | {r['n_cells']} | " + " | ".join(_f(r["columns"].get(k)) for _, k in cols) + " |")
    th = doc["thresholds"]
    lines += ["", "## Four properties (judged on the CI bounds)", "",
              f"forgetting ≥ {th['min_forget_drop']}, retain drop ≤ {th['max_retain_drop']}, "
              f"PTQ gap ≤ {th['max_ptq_gap']}, share of cells with CAD verdict `erasure` ≥ 0.5. pass = the whole CI "
              "clears the threshold, fail = the whole CI misses it, undecided otherwise.", "",
              "| method | forgetting | retain drop | PTQ gap | structural erasure |", "|---|---|---|---|---|"]
    for m, r in doc["table"].items():
        p = r["properties"]
        lines.append(f"| {m} | " + " | ".join(f"{CALL[p[k]['call']]} {_f(p[k])}" for k in PROPS) + " |")
    stale = [c for c in doc["cells"] if not cad_current(c)]
    if stale:
        lines += ["", f"**{len(stale)} of {len(doc['cells'])} cells carry CAD evidence of an older format** (marked in "
                  "the per-split table): their verdicts are not comparable with the current ones and are left out of "
                  "the structural-erasure share and the verdict-score claim; the next run of the command refreshes "
                  "them."]
    lines += ["", "## Per split (each cell's own scorecard: paired bootstrap CI over its rows, call from the CI)", "",
              "| method | split | seed | forgetting | retain drop | PTQ gap | CAD verdict | relearn recovery |",
              "|---|---|---|---|---|---|---|---|"]
    for cell in sorted(doc["cells"], key=lambda x: (x["method"], x["split"], x["seed"])):
        p = cell["scorecard"]["properties"]

        def one(k: str, p: dict[str, Any] = p) -> str:
            ci = p[k].get("ci") or [None, None]
            est = {"value": p[k]["value"], "lo": ci[0], "hi": ci[1]}
            return f"{p[k].get('call', '–')} {_f(est)}"

        rec = cell["relearn"]["recovery"]
        lines.append(f"| {cell['method']} | {cell['split']} | {cell['seed']} | {one('forgetting')} | {one('retain')} | "
                     f"{one('ptq_gap')} | {_verdict_cell(cell)} | "
                     f"{'–' if rec is None else f'{rec:.3g}'} |")
    lines += ["", "## The paper's claims on this model", ""]
    for k, cl in doc["claims"].items():
        verdict = {"holds": "holds", "does not hold": "**does not hold**", "undecided": "undecided", None: "not tested"}
        lines.append(f"- ({k}) {cl['claim']}: {verdict[cl['holds']]} — measured "
                     f"`{json.dumps(_short(cl['measured']), default=str)}`")
    sw = doc.get("sweep") or {}
    if sw.get("methods"):
        lines += ["", f"## Baseline settings: sweep on the calibration split (target forget accuracy ≤ "
                      f"{sw['target_forget_acc']})", "",
                  "| method | setting | forget acc | retain drop | same-domain retain drop | chosen |", "|---|---|---|---|---|---|"]
        for m, s in sw["methods"].items():
            for p in s["points"]:
                lines.append(f"| {m} | `{json.dumps(p['point'])}` | {p['forget_acc']:.3f} | {p['retain_drop']:.3f} | "
                             f"{p['retain_same_drop']:.3f} | {'✔' if p['point'] == s['chosen'] else ''} |")
    lines += ["", "## Base model per split", "", "| split | " + " | ".join(_BASE) + " |", "|---|" + "---|" * len(_BASE)]
    for sp, b in sorted(doc["base_accuracy"].items()):
        lines.append(f"| {sp} | " + " | ".join("–" if b.get(k) is None else f"{b[k]:.3f}" for k in _BASE) + " |")
    return "\n".join(lines) + "\n"


_BASE = ("forget", "forget_nf4", "retain", "retain_same", "paraphrase", "relearn_held")


def _short(x: Any) -> Any:
    """Estimates as [value, lo, hi] for the claims line."""
    if isinstance(x, dict) and "value" in x and "lo" in x:
        return [None if x[k] is None else round(x[k], 3) for k in ("value", "lo", "hi")]
    if isinstance(x, dict):
        return {k: _short(v) for k, v in x.items() if k not in ("splits", "n_boot", "dropped", "level")}
    return round(x, 4) if isinstance(x, float) else x


__all__ = ["claims", "markdown", "method_columns", "properties", "summarise"]
