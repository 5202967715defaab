"""Which stored evidence predicts relearning? An exploratory table over finished benchmark cells (issue 12).

For every run that forgot (forget drop ≥ the benchmark's threshold) with a defined relearning recovery,
each quantity the cell already stores — the CAD verdict's erasure score E and its parts, the paper's CAD,
the hybrid curves, behaviour on paraphrases and same-domain facts, the update size — is rank-correlated
with the floored relearning recovery: Spearman ρ with a 95% bootstrap CI over runs, and the partial ρ with
the forget drop controlled (``circuitforge.eval.stats.spearman_ci``); with several benchmarks, also the
within-model ρ (each run's rank among the runs of its own model, pooled: whether the quantity orders runs of
one model, whatever the models' different levels) and a table per model. Nothing is recomputed; every number
comes from the cells' JSON.

Exploratory: a dozen candidates on the same runs, so one CI excluding 0 by chance is expected about half
the time at this n; read it as where to look next, not as a validated score. The ceiling any score can
reach is the relearning measure's own reliability (``claims.verdict_score.measured.relearn_reliability``
in results.json).

    python benchmarks/cad_predictors.py --results docs/results/unlearning \
        --results docs/results/unlearning-gemma3-270m --out docs/results/cad_predictors.json
    python benchmarks/cad_predictors.py --retable docs/results/cad_predictors_families.json   # tables only

``truths`` / ``truths_table``: the mechanistic scores whose signs were fixed before any of these runs (E, the
paper's CAD, Π) against each ground truth issue 12 names — relearning recovery, paraphrase retention (targeted
paraphrase accuracy ÷ the base model's, from the benchmark's ``splits/``) and NF4 recovery (the share of the fp
forget drop the NF4 round trip undoes).

With several benchmarks the JSON also holds the two tables docs/cad.md shows (``scripts/docs_tables.py``):
``families_table`` (each quantity's pooled, within-model and per-model ρ) and ``reliability_table`` (per
model, the relearning measure's reliability and the ceiling it puts on any |ρ|).
"""

import argparse
import glob
import json
import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np

Cell = dict[str, Any]


def _mean(xs: list[float] | None) -> float | None:
    xs = [x for x in (xs or []) if x is not None and math.isfinite(x)]
    return float(np.mean(xs)) if xs else None


def _acc(c: Cell, key: str) -> float | None:
    v = c["correct"].get(key)
    return float(np.mean(v)) if v else None


# name -> (what it is, function of a cell, sign expected if it measured erasure: "-" = higher means less relearning)
FEATURES: dict[str, tuple[str, Callable[[Cell], float | None], str]] = {
    "erasure_score": ("the verdict's erasure score E", lambda c: c["scorecard"]["cad"].get("erasure_score"), "-"),
    "paper_cad": ("the paper's CAD value", lambda c: c["scorecard"]["cad"].get("value"), "-"),
    "behavioural_cad": ("CAD's behavioural value", lambda c: c["scorecard"]["cad"].get("behavioural_value"), "-"),
    "presence": ("the verdict's answer presence Π (lens fitted on M0, read on M1)",
                 lambda c: c["scorecard"]["cad"].get("presence"), "+"),
    "own_forget_ratio": ("M1's own forget metric ÷ M0's", lambda c: c["scorecard"]["cad"].get("own_forget_ratio"), "+"),
    "suppression_share": ("CAD's suppression share", lambda c: c["scorecard"]["cad"].get("suppression_share"), "+"),
    "hybrid_area": ("mean hybrid recovery R_L over L ≥ 1 (M1 below L, M0 above)",
                    lambda c: _mean((c["scorecard"]["cad"].get("hybrid_recovery_forget") or [])[1:]), "+"),
    "reverse_hybrid_area": ("mean reverse-hybrid recovery (M0 below L, M1 above)",
                            lambda c: _mean(c["scorecard"]["cad"].get("reverse_hybrid_recovery_forget")), "+"),
    "paraphrase_acc": ("accuracy on paraphrases of the targeted facts", lambda c: _acc(c, "paraphrase"), "+"),
    "same_domain_acc": ("accuracy on untargeted same-domain facts", lambda c: _acc(c, "retain_same"), "?"),
    "forget_acc": ("forget accuracy (fp)", lambda c: _acc(c, "forget"), "+"),
    "ptq_gap": ("quantized − fp forget accuracy", lambda c: c["scorecard"]["properties"]["ptq_gap"]["value"], "+"),
    "log_bin_ratio": ("log10 median NF4 bin width ÷ |Δθ| (update smallness)",
                      lambda c: math.log10(c["median_binwidth_to_update_ratio"])
                      if c.get("median_binwidth_to_update_ratio") else None, "+"),
}


# The ground truths issue 12 names, each a "recovery" (higher = more of the knowledge is still there), so a
# score that measured erasure has ρ < 0 with every one of them. name -> (what, function of a cell).
def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b <= 0 else a / b


def _nf4_recovery(c: Cell) -> float | None:
    fp, q, base = _acc(c, "forget"), _acc(c, "forget_nf4"), c["_base"].get("forget")
    return None if fp is None or q is None or base is None else _ratio(q - fp, base - fp)


TRUTHS: dict[str, tuple[str, Callable[[Cell], float | None]]] = {
    "relearn_recovery": ("relearning recovery (floored, best budget)", lambda c: c["relearn"]["recovery"]),
    "paraphrase_retention": ("paraphrase retention: targeted-paraphrase accuracy ÷ the base model's",
                             lambda c: _ratio(_acc(c, "paraphrase"), c["_base"].get("paraphrase"))),
    "nf4_recovery": ("NF4 recovery: (NF4 − fp forget accuracy) ÷ the fp forget drop", _nf4_recovery),
}
TRUTH_SCORES = ("erasure_score", "paper_cad", "presence")
"""the mechanistic scores whose predicted sign was fixed before any of these runs (E, the paper's CAD, Π)"""


def truth_table(cells: list[Cell], n_boot: int) -> list[dict[str, Any]]:
    """Each mechanistic score of ``TRUTH_SCORES`` against each ground truth of ``TRUTHS``: Spearman ρ with a
    95% bootstrap CI over runs, and the within-model ρ (each run ranked among its own model's runs)."""
    from circuitforge.eval.stats import spearman_ci

    out = []
    for name in TRUTH_SCORES:
        what, f, sign = FEATURES[name]
        row: dict[str, Any] = {"feature": name, "what": what, "erasure_sign": sign, "truths": {}}
        for tname, (_, t) in TRUTHS.items():
            pairs = [(f(c), t(c), c["_bench"]) for c in cells]
            pairs = [(float(x), float(y), m) for x, y, m in pairs
                     if x is not None and y is not None and math.isfinite(float(x)) and math.isfinite(float(y))]
            if len(pairs) < 4:
                row["truths"][tname] = {"n": len(pairs)}
                continue
            xs, ys, ms = (list(v) for v in zip(*pairs, strict=True))
            row["truths"][tname] = {"n": len(xs), "spearman": spearman_ci(xs, ys, n_boot=n_boot).to_dict(),
                                    "within_model_spearman": spearman_ci(within(xs, ms), within(ys, ms),
                                                                         n_boot=n_boot).to_dict()}
        out.append(row)
    return out


def rows(results_dirs: list[str]) -> tuple[list[Cell], dict[str, Any]]:
    """The cells that forgot with a defined relearning recovery and CAD evidence of the current format, each
    tagged with its benchmark (cells of an older format are counted in the metadata and left out)."""
    from circuitforge.eval.bench_summary import cad_current

    out, meta = [], {}
    for d in results_dirs:
        with open(os.path.join(d, "results.json")) as f:
            res = json.load(f)
        thr = float(res["thresholds"]["min_forget_drop"])
        meta[d] = {"model": res["model"], "min_forget_drop": thr, "old_cad_format_left_out": 0,
                   "relearn_reliability": res["claims"].get("verdict_score", {}).get("measured", {}).get("relearn_reliability")}
        bases: dict[str, dict[str, float]] = {}   # per split, read once
        for p in sorted(glob.glob(os.path.join(d, "cells", "*.json"))):
            with open(p) as f:
                c = json.load(f)
            if not cad_current(c):
                meta[d]["old_cad_format_left_out"] += 1
                continue
            if (c["scorecard"]["properties"]["forgetting"]["value"] or 0) >= thr and c["relearn"]["recovery"] is not None:
                c["_bench"] = res["model"]
                c["_dir"] = d
                if c["split"] not in bases:
                    bases[c["split"]] = _base_accuracies(d, c["split"])
                c["_base"] = bases[c["split"]]
                out.append(c)
    return out, meta


def _base_accuracies(results_dir: str, split: str) -> dict[str, float]:
    """The base model's accuracy on each task of ``split`` (the benchmark's ``splits/<split>.json``)."""
    path = os.path.join(results_dir, "splits", f"{split}.json")
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        base = json.load(f)["base"]
    return {k: float(np.mean(v)) for k, v in base.items() if isinstance(v, list) and v}


def within(xs: list[float], groups: list[str]) -> list[float]:
    """Each value's rank within its group (model/method), centred and scaled to [−0.5, 0.5]: pooled over
    groups, a Spearman ρ of these asks whether the quantity orders runs *of the same method* by relearning,
    not only which method was run (the groups' ranks are fixed before the bootstrap, an approximation)."""
    from scipy.stats import rankdata

    out = [0.0] * len(xs)
    for g in set(groups):
        idx = [i for i, x in enumerate(groups) if x == g]
        if len(idx) < 2:
            continue
        rk = rankdata([xs[i] for i in idx])
        for i, v in zip(idx, rk, strict=True):
            out[i] = (float(v) - 1) / (len(idx) - 1) - 0.5
    return out


def table(cells: list[Cell], n_boot: int) -> list[dict[str, Any]]:
    from circuitforge.eval.stats import spearman_ci

    out = []
    for name, (what, f, sign) in FEATURES.items():
        xs, ys, zs, gs = [], [], [], []
        cells_with = []
        for c in cells:
            x = f(c)
            if x is None or not math.isfinite(float(x)):
                continue
            cells_with.append(c)
            xs.append(float(x))
            ys.append(float(c["relearn"]["recovery"]))
            zs.append(float(c["scorecard"]["properties"]["forgetting"]["value"]))
            gs.append(f"{c['_bench']}/{c['method']}")
        if len(xs) < 4:
            out.append({"feature": name, "what": what, "n": len(xs)})
            continue
        r, rp = spearman_ci(xs, ys, n_boot=n_boot), spearman_ci(xs, ys, zs=zs, n_boot=n_boot)
        wx, wy = within(xs, gs), within(ys, gs)
        rw = spearman_ci(wx, wy, n_boot=n_boot)
        ms = [g.split("/")[0] for g in gs]   # ranks within each model: runs of one model ordered, then pooled
        rm = spearman_ci(within(xs, ms), within(ys, ms), n_boot=n_boot)
        ss = [f"{c['_bench']}/{c['split']}" for c in cells_with]   # runs on one split: the same facts, same attack
        rs = spearman_ci(within(xs, ss), within(ys, ss), n_boot=n_boot)
        out.append({"feature": name, "what": what, "erasure_sign": sign, "n": len(xs),
                    "spearman": r.to_dict(), "partial_spearman_forget_drop": rp.to_dict(),
                    "within_method_spearman": rw.to_dict(), "within_model_spearman": rm.to_dict(),
                    "within_split_spearman": rs.to_dict(),
                    "ci_excludes_0": bool(r.lo is not None and r.hi is not None and (r.lo > 0 or r.hi < 0)),
                    "meets_target": bool(r.hi is not None and r.hi <= -0.6 if sign == "-" else
                                         r.lo is not None and r.lo >= 0.6 if sign == "+" else False)})
    return out


def variance_explained(cells: list[Cell], group: Callable[[Cell], str]) -> float | None:
    """η²: the share of the relearning recovery's variance over ``cells`` between the groups ``group`` makes
    (between-group sum of squares ÷ total); None when the recoveries do not vary."""
    ys = np.array([float(c["relearn"]["recovery"]) for c in cells])
    total = float(((ys - ys.mean()) ** 2).sum()) if len(ys) else 0.0
    if total <= 0:
        return None
    by: dict[str, list[float]] = {}
    for c, y in zip(cells, ys, strict=True):
        by.setdefault(group(c), []).append(float(y))
    return sum(len(v) * (float(np.mean(v)) - float(ys.mean())) ** 2 for v in by.values()) / total


def by_verdict(cells: list[Cell], n_boot: int, seed: int = 0) -> dict[str, Any]:
    """Relearning recovery by verdict: per verdict n, median, mean and range; for ``erasure`` and for
    ``suppression``, the difference of means (that verdict − every other run) with a 95% percentile
    bootstrap CI over runs (each group resampled on its own). A verdict that tracked erasure gives
    erasure − rest below 0 and suppression − rest above 0."""
    rec: dict[str, list[float]] = {}
    for c in cells:
        rec.setdefault(str(c["scorecard"]["cad"].get("verdict")), []).append(float(c["relearn"]["recovery"]))
    groups = {v: {"n": len(x), "median": float(np.median(x)), "mean": float(np.mean(x)),
                  "min": float(np.min(x)), "max": float(np.max(x))} for v, x in sorted(rec.items())}
    out: dict[str, Any] = {"groups": groups}
    for verdict in ("erasure", "suppression"):
        inside = np.array(rec.get(verdict, []))
        rest = np.array([y for v, x in rec.items() if v != verdict for y in x])
        diff: dict[str, Any] = {"value": None, "lo": None, "hi": None}
        if len(inside) and len(rest):
            g = np.random.default_rng(seed)
            d = [g.choice(inside, len(inside)).mean() - g.choice(rest, len(rest)).mean() for _ in range(n_boot)]
            diff = {"value": float(inside.mean() - rest.mean()), "lo": float(np.quantile(d, 0.025)),
                    "hi": float(np.quantile(d, 0.975)), f"n_{verdict}": len(inside), "n_rest": len(rest)}
        out[f"{verdict}_minus_rest"] = diff
    return out


def _ci(e: dict[str, Any] | None) -> str:
    return "–" if not e or e.get("value") is None else f"{e['value']:+.2f} [{e['lo']:+.2f}, {e['hi']:+.2f}]"


def markdown(doc: dict[str, Any]) -> str:
    lines = ["| quantity | n | ρ with relearning recovery [95% CI] | partial ρ (forget drop) | within-method ρ "
             "| within-model ρ | within-split ρ | sign if it tracked erasure |", "|---|---|---|---|---|---|---|---|"]
    for r in doc["table"]:
        if "spearman" not in r:
            lines.append(f"| {r['what']} | {r['n']} | – | – | – | – | – | – |")
            continue
        lines.append(f"| {r['what']} (`{r['feature']}`) | {r['n']} | {_ci(r['spearman'])} | "
                     f"{_ci(r['partial_spearman_forget_drop'])} | {_ci(r['within_method_spearman'])} | "
                     f"{_ci(r.get('within_model_spearman', {}))} | {_ci(r.get('within_split_spearman', {}))} | "
                     f"{r['erasure_sign']} |")
    per = doc.get("per_model") or {}
    if len(per) > 1:
        keys = ["erasure_score", "paper_cad", "presence", "log_bin_ratio", "paraphrase_acc"]
        lines += ["", "Per model (ρ with relearning recovery [95% CI], n):", "",
                  "| model | n | " + " | ".join(f"`{k}`" for k in keys) + " |", "|---|---|" + "---|" * len(keys)]
        for m, tab in per.items():
            byf = {r["feature"]: r for r in tab}
            n = max((r["n"] for r in tab), default=0)
            lines.append(f"| {m} | {n} | " + " | ".join(_ci(byf[k]["spearman"]) if "spearman" in byf.get(k, {}) else "–"
                                                       for k in keys) + " |")
    bv = doc.get("by_verdict")
    if bv:
        lines += ["", "| verdict | n | median recovery | mean | min | max |", "|---|---|---|---|---|---|"]
        lines += [f"| {v} | {g['n']} | {g['median']:.2f} | {g['mean']:.2f} | {g['min']:.2f} | {g['max']:.2f} |"
                  for v, g in bv["groups"].items()]
        for verdict in ("erasure", "suppression"):
            d = bv.get(f"{verdict}_minus_rest") or {}
            if d.get("value") is not None:
                lines += ["", f"mean recovery, `{verdict}` − the rest: {_ci(d)} ({d[f'n_{verdict}']} vs {d['n_rest']} runs)"]
    return "\n".join(lines)


def families_table(doc: dict[str, Any]) -> dict[str, Any]:
    """Every quantity: n, pooled ρ, within-model ρ and each model's own ρ with relearning recovery."""
    per = doc.get("per_model") or {}
    models = list(per)
    by_model = {m: {r["feature"]: r for r in per[m]} for m in models}
    rows = []
    for r in doc["table"]:
        if "spearman" not in r:
            continue
        rows.append([f"{r['what']} ({r['erasure_sign']})", r["n"], _ci(r["spearman"]),
                     _ci(r.get("within_model_spearman")),
                     *(_ci(by_model[m].get(r["feature"], {}).get("spearman")) for m in models)])
    n = doc.get("runs_per_model", {})
    return {"columns": ["quantity (the sign it would have if it tracked erasure)", "n", "pooled ρ [95% CI]",
                        "within-model ρ [95% CI]", *(f"{m} ({n.get(m, '?')})" for m in models)], "rows": rows}


def reliability_table(doc: dict[str, Any]) -> dict[str, Any]:
    """Per benchmark: the relearning recovery's reliability across its runs (1 − mean row-sampling variance ÷
    the variance between runs) and the ceiling √reliability it puts on any score's |ρ| with it."""
    def num(x: Any) -> Any:
        return None if x is None else round(float(x), 3)

    rows = []
    for meta in doc["benchmarks"].values():
        rr = meta.get("relearn_reliability") or {}
        rows.append([meta["model"], rr.get("n_runs"), num(rr.get("between_run_variance")),
                     num(rr.get("mean_sampling_variance")), num(rr.get("reliability")), num(rr.get("ceiling"))])
    return {"columns": ["model", "runs", "variance between runs", "mean row-sampling variance", "reliability",
                        "ceiling on |ρ| (√reliability)"], "rows": rows}


def truths_table(doc: dict[str, Any]) -> dict[str, Any]:
    """The mechanistic scores against every ground truth: ρ [95% CI] (n), and within-model ρ with several models."""
    several = len({m["model"] for m in doc.get("benchmarks", {}).values()}) > 1
    rows = []
    for r in doc["truths"]:
        cells = []
        for t in TRUTHS:
            e = r["truths"].get(t, {})
            cells.append(f"{_ci(e.get('spearman'))} (n {e.get('n', 0)})")
            if several:
                cells.append(_ci(e.get("within_model_spearman")))
        rows.append([f"{r['what']} ({r['erasure_sign']})", *cells])
    cols = []
    for what, _ in TRUTHS.values():
        cols.append(f"ρ with {what} [95% CI]")
        if several:
            cols.append("within-model ρ")
    return {"columns": ["score (the sign it would have if it tracked erasure)", *cols], "rows": rows}


def predictors_table(doc: dict[str, Any]) -> dict[str, Any]:
    """Every stored quantity against relearning recovery: pooled, partial (forget drop), within-method and
    within-split ρ [95% CI]."""
    rows = [[f"{r['what']} ({r['erasure_sign']})", r["n"], _ci(r["spearman"]), _ci(r["partial_spearman_forget_drop"]),
             _ci(r["within_method_spearman"]), _ci(r.get("within_split_spearman"))]
            for r in doc["table"] if "spearman" in r]
    return {"columns": ["quantity (the sign it would have if it tracked erasure)", "n", "ρ with relearning recovery [95% CI]",
                        "partial ρ (forget drop)", "within-method ρ", "within-split ρ"], "rows": rows}


def verdict_table(doc: dict[str, Any]) -> dict[str, Any]:
    """Relearning recovery by verdict, and each of erasure / suppression against the rest."""
    bv = doc["by_verdict"]
    rows: list[list[Any]] = [[v, g["n"], round(g["median"], 2), round(g["mean"], 2), f"{g['min']:.2f} – {g['max']:.2f}",
                              _ci(bv.get(f"{v}_minus_rest"))] for v, g in bv["groups"].items()]
    return {"columns": ["verdict", "runs", "median recovery", "mean", "range",
                        "mean recovery, this verdict − the rest [95% CI]"], "rows": rows}


def _with_tables(doc: dict[str, Any]) -> dict[str, Any]:
    if "table" in doc and "by_verdict" in doc:
        doc = {**doc, "predictors_table": predictors_table(doc), "verdict_table": verdict_table(doc)}
    if "truths" in doc:
        doc = {**doc, "truths_table": truths_table(doc)}
    if len(doc.get("per_model") or {}) > 1:
        return {**doc, "families_table": families_table(doc), "reliability_table": reliability_table(doc)}
    return doc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--retable", default=None, help="rewrite the tables of this stored JSON and stop")
    ap.add_argument("--results", action="append", help="a benchmark results folder (repeatable)")
    ap.add_argument("--boot", type=int, default=2000)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.retable:
        from circuitforge._provenance import write_json_atomic

        write_json_atomic(args.retable, _with_tables(json.loads(open(args.retable).read())))
        return print(f"{args.retable}: tables rewritten")
    if not args.results:
        ap.error("--results is required")
    cells, meta = rows(args.results)
    by = {m: sum(c["_bench"] == m for c in cells) for m in sorted({c["_bench"] for c in cells})}
    doc = {"format": "circuitforge.cad_predictors/1",
           "command": "python benchmarks/cad_predictors.py " + " ".join(f"--results {d}" for d in args.results)
           + (f" --out {args.out}" if args.out else ""),
           "benchmarks": meta, "n_runs": len(cells), "runs_per_model": by, "n_boot": args.boot,
           "runs": [{"model": c["_bench"], "results": c["_dir"], "method": c["method"], "split": c["split"],
                     "seed": c["seed"], "verdict": c["scorecard"]["cad"].get("verdict"),
                     "relearn_recovery": c["relearn"]["recovery"]} for c in cells],
           "table": table(cells, args.boot), "truths": truth_table(cells, args.boot),
           "by_verdict": by_verdict(cells, args.boot),
           "recovery_variance_explained": {
               "split": variance_explained(cells, lambda c: f"{c['_bench']}/{c['split']}"),
               "method_and_settings": variance_explained(cells, lambda c: f"{c['_dir']}/{c['method']}")},
           "per_model": {m: table([c for c in cells if c["_bench"] == m], args.boot) for m in by} if len(by) > 1 else {}}
    print(f"{len(cells)} runs that forgot ({by}); old CAD format left out: "
          f"{ {d: m['old_cad_format_left_out'] for d, m in meta.items()} }")
    print(markdown(doc))
    if args.out:
        from circuitforge._provenance import write_json_atomic

        write_json_atomic(args.out, _with_tables(doc))


if __name__ == "__main__":
    main()
