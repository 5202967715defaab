"""The unlearning benchmark runner (``circuitforge bench``): every method × seed on one model, with
quantization, CAD and relearning attacks, resumable cell by cell, summarised as Markdown + JSON + HTML.

Each cell (method, seed) is written to ``<out>/cells/<method>-seed<seed>.json`` as soon as it finishes;
a rerun with the same config version skips finished cells. The summary reports mean ± standard deviation
over seeds (± 0 for one seed) and checks the paper's claims against the measured numbers.
"""

import json
import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from circuitforge._provenance import versions, write_json_atomic, write_text_atomic
from circuitforge.errors import CircuitForgeError


@dataclass(frozen=True)
class BenchConfig:
    version: int
    model: str
    forget: str
    retain: str
    paraphrase: str
    n_forget: int = 64
    n_retain: int = 64
    n_cad: int = 24
    methods: tuple[str, ...] = ("mansu", "ga", "graddiff", "npo", "rmu", "sure")
    seeds: tuple[int, ...] = (0, 1, 2)
    deterministic: tuple[str, ...] = ()
    schemes: tuple[str, ...] = ("nf4", "fp4", "int8")
    ig_steps: int = 5
    relearn: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_toml(cls, path: str | Path) -> "BenchConfig":
        try:
            d = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise CircuitForgeError(f"{path}: cannot read benchmark config: {e}") from e
        for k in ("methods", "seeds", "deterministic", "schemes"):
            if k in d:
                d[k] = tuple(d[k])
        try:
            return cls(**d)
        except TypeError as e:
            raise CircuitForgeError(f"{path}: {e}") from e

    def cells(self) -> list[tuple[str, int]]:
        return [(m, s) for m in self.methods for s in (self.seeds[:1] if m in self.deterministic else self.seeds)]


def run_cell(cfg: BenchConfig, method: str, seed: int, ctx: dict[str, Any]) -> dict[str, Any]:
    """One method × seed: unlearn, evaluate in fp and each scheme, diagnostics, CAD, relearning attack."""
    from circuitforge.cad import CADSettings, cad
    from circuitforge.data import evaluate
    from circuitforge.eval.relearn import RelearnSettings, relearning_attack
    from circuitforge.quant import diff_report, quantized_copy
    from circuitforge.quant.survival import recovery_ratio
    from circuitforge.surgery import unlearn

    base, forget, retain, para = ctx["base"], ctx["forget"], ctx["retain"], ctx["paraphrase"]
    t0 = time.time()
    kw: dict[str, Any] = {"circuit": ctx["circuit"]} if method == "mansu" else {}
    res = unlearn(base, forget, retain, method=method, seed=seed, **kw)
    t_unlearn = time.time() - t0
    m = res.handle
    acc: dict[str, float] = {"forget_fp": evaluate(m, forget).accuracy, "retain_fp": evaluate(m, retain).accuracy,
                             "paraphrase_fp": evaluate(m, para).accuracy}
    for sch in cfg.schemes:
        q = quantized_copy(m, sch)
        acc[f"forget_{sch}"] = evaluate(q, forget).accuracy
        if sch == "nf4":
            acc["retain_nf4"] = evaluate(q, retain).accuracy
            acc["paraphrase_nf4"] = evaluate(q, para).accuracy
    gaps = {sch: acc[f"forget_{sch}"] - acc["forget_fp"] for sch in cfg.schemes}
    rec, note = recovery_ratio(acc["forget_nf4"], acc["forget_fp"], ctx["base_acc"]["forget_fp"]) if "nf4" in cfg.schemes else (None, "no nf4")
    diag = diff_report(base, m, "nf4")
    c = cad(base, m, ctx["cad_task"], circuit=ctx["circuit"], settings=CADSettings(method="eap-ig", ig_steps=cfg.ig_steps, seed=seed))
    rl = relearning_attack(base, m, forget, RelearnSettings(seed=seed, **cfg.relearn))
    return {
        "method": method, "seed": seed, "accuracy": acc, "ptq_gap": gaps, "recovery_ratio_nf4": rec,
        "recovery_ratio_note": note, "median_binwidth_to_update_ratio": diag.get("median_binwidth_to_update_ratio"),
        "code_flip_rate": diag.get("code_flip_rate"), "changed_share": diag.get("changed_share"),
        "cad": c.summary(), "relearn": rl.to_dict(), "unlearn_seconds": t_unlearn,
        "stop_reason": getattr(res, "stop_reason", None), "settings": getattr(res, "settings", {}),
        "edited": m.identity(), "seconds": time.time() - t0,
    }


def _mean_sd(xs: list[float | None]) -> tuple[float | None, float | None]:
    v = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not v:
        return None, None
    return statistics.fmean(v), (statistics.stdev(v) if len(v) > 1 else 0.0)


def _get(cell: dict[str, Any], path: str) -> Any:
    cur: Any = cell
    for k in path.split("."):
        cur = None if cur is None else cur.get(k)
    return cur


COLUMNS = [
    ("forget fp", "accuracy.forget_fp"), ("forget NF4", "accuracy.forget_nf4"), ("forget FP4", "accuracy.forget_fp4"),
    ("forget int8", "accuracy.forget_int8"), ("paraphrase fp", "accuracy.paraphrase_fp"),
    ("retain fp", "accuracy.retain_fp"), ("retain NF4", "accuracy.retain_nf4"), ("PTQ gap NF4", "ptq_gap.nf4"),
    ("PTQ gap FP4", "ptq_gap.fp4"), ("recovery NF4", "recovery_ratio_nf4"), ("CAD", "cad.value"), ("CAD z", "cad.z"),
    ("bin/|Δθ| median", "median_binwidth_to_update_ratio"), ("NF4 flip rate", "code_flip_rate"),
    ("share edited", "changed_share"), ("relearn recovery", "relearn.recovery_rate"), ("wall s", "seconds"),
]


def summarise(cfg: BenchConfig, cells: list[dict[str, Any]], base_acc: dict[str, float]) -> dict[str, Any]:
    """Per-method mean ± sd of every column, the four-property verdicts and the paper-claims check."""
    from circuitforge.eval.scorecard import Thresholds

    th = Thresholds()
    table: dict[str, dict[str, Any]] = {}
    for method in cfg.methods:
        cs = [c for c in cells if c["method"] == method]
        if not cs:
            continue
        row = {name: _mean_sd([_get(c, path) for c in cs]) for name, path in COLUMNS}
        verdicts = [c["cad"]["verdict"] for c in cs]
        drop = base_acc["forget_fp"] - (row["forget fp"][0] or 0.0)
        rdrop = base_acc["retain_fp"] - (row["retain fp"][0] or 0.0)
        gap = row["PTQ gap NF4"][0]
        props = {"forgetting": drop >= th.min_forget_drop, "retain": rdrop <= th.max_retain_drop,
                 "ptq_gap": gap is not None and gap <= th.max_ptq_gap,
                 "structural_erasure": verdicts.count("erasure") > len(verdicts) / 2}
        table[method] = {"columns": row, "verdicts": verdicts, "properties": props,
                         "values": {"forgetting": drop, "retain": rdrop, "ptq_gap": gap}, "n_seeds": len(cs)}
    return {"table": table, "claims": claims(table, cells)}


def claims(table: dict[str, Any], cells: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The paper's claims (a)–(e), checked against this run."""
    grad = [m for m in ("ga", "graddiff", "npo") if m in table]
    out: dict[str, dict[str, Any]] = {}
    gaps = {m: table[m]["columns"]["PTQ gap NF4"][0] for m in grad}
    out["a"] = {"claim": "gradient baselines' forgetting recovers under NF4 (positive PTQ gap)",
                "measured": gaps, "holds": bool(gaps) and all(g is not None and g > 0 for g in gaps.values())}
    survivors = [m for m in table if (table[m]["columns"]["PTQ gap NF4"][0] or 0) <= 0 and m != "mansu"]
    barely = {m: table[m]["values"]["forgetting"] for m in survivors}
    out["b"] = {"claim": "baselines that survive NF4 barely change the model (forget drop < 0.3)",
                "measured": barely, "holds": all(v < 0.3 for v in barely.values()) if barely else None}
    ratios = {m: table[m]["columns"]["bin/|Δθ| median"][0] for m in grad}
    out["c"] = {"claim": "baseline updates sit 47–828× below the NF4 bin width",
                "measured": ratios, "holds": bool(ratios) and all(r is not None and 47 <= r <= 828 for r in ratios.values())}
    if "mansu" in table:
        p = table["mansu"]["properties"]
        out["d"] = {"claim": "MANSU meets all four properties", "measured": {**p, **table["mansu"]["values"]},
                    "holds": all(p.values())}
    xs = [c["cad"]["value"] for c in cells]
    ys = [(c["accuracy"]["forget_nf4"] - c["accuracy"]["forget_fp"]) + (c["relearn"]["attacked_accuracy"] - c["relearn"]["before_accuracy"]) for c in cells]
    rho = _spearman(xs, ys)
    out["e"] = {"claim": "CAD predicts recovery (negative rank correlation between CAD and NF4 + relearning recovery)",
                "measured": {"spearman": rho, "n_runs": len(cells)}, "holds": None if rho is None else rho < 0}
    return out


def _spearman(xs: list[float], ys: list[float]) -> float | None:
    if len(xs) < 3:
        return None
    from scipy.stats import spearmanr

    r = spearmanr(xs, ys).statistic
    return None if r != r else float(r)


def _fmt(ms: tuple[float | None, float | None]) -> str:
    m, s = ms
    return "–" if m is None else (f"{m:.3g} ± {s:.2g}" if s else f"{m:.3g}")


def markdown(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = [f"# Unlearning benchmark: {meta['model']}", "", f"Command: `{meta['command']}`  ",
             f"Config version {meta['config']['version']}; seeds run {meta['seeds_run']}; compute time of the cells "
             f"{meta['cell_seconds']:.0f} s (this invocation, resumed cells not recomputed: {meta['seconds']:.0f} s) "
             f"on {meta['cores']} CPU cores.", "",
             f"Base model: forget {meta['base_acc']['forget_fp']:.3f} (NF4 {meta['base_acc']['forget_nf4']:.3f}), "
             f"retain {meta['base_acc']['retain_fp']:.3f}, paraphrase {meta['base_acc']['paraphrase_fp']:.3f}.", "",
             "| method | " + " | ".join(n.replace("|", "\\|") for n, _ in COLUMNS) + " | CAD verdicts |",
             "|---|" + "---|" * (len(COLUMNS) + 1)]
    for m, r in summary["table"].items():
        lines.append(f"| {m} | " + " | ".join(_fmt(tuple(r["columns"][n])) for n, _ in COLUMNS) + f" | {', '.join(r['verdicts'])} |")
    lines += ["", "## Four properties", "", "| method | forgetting | retain | PTQ gap ≤ 0 | structural erasure |", "|---|---|---|---|---|"]
    for m, r in summary["table"].items():
        p, v = r["properties"], r["values"]
        lines.append(f"| {m} | {'✅' if p['forgetting'] else '❌'} {v['forgetting']:.3f} | {'✅' if p['retain'] else '❌'} "
                     f"{v['retain']:.3f} | {'✅' if p['ptq_gap'] else '❌'} {v['ptq_gap'] if v['ptq_gap'] is None else round(v['ptq_gap'], 3)} | "
                     f"{'✅' if p['structural_erasure'] else '❌'} |")
    lines += ["", "## The paper's claims on this model", ""]
    for k, c in summary["claims"].items():
        verdict = {True: "holds", False: "**does not hold**", None: "undetermined"}[c["holds"]]
        lines.append(f"- ({k}) {c['claim']}: {verdict} — measured `{json.dumps(c['measured'], default=str)}`")
    return "\n".join(lines) + "\n"


def run_bench(cfg: BenchConfig, out_dir: Path, command: str = "", progress: Any = None) -> dict[str, Any]:
    """Run (or resume) the benchmark; write ``results.md``, ``results.json``, ``report.html`` in ``out_dir``."""
    import os

    from circuitforge.data import evaluate, load_task
    from circuitforge.models import load
    from circuitforge.quant import quantized_copy

    say = progress or (lambda s: None)
    t_start = time.time()
    cells_dir = out_dir / "cells"
    cells_dir.mkdir(parents=True, exist_ok=True)
    base = load(cfg.model)
    forget = load_task(cfg.forget).head(cfg.n_forget)
    retain = load_task(cfg.retain).head(cfg.n_retain)
    para = load_task(cfg.paraphrase).head(cfg.n_forget)
    bq = quantized_copy(base, "nf4")
    base_acc = {"forget_fp": evaluate(base, forget).accuracy, "retain_fp": evaluate(base, retain).accuracy,
                "paraphrase_fp": evaluate(base, para).accuracy, "forget_nf4": evaluate(bq, forget).accuracy}
    cad_task = forget.head(cfg.n_cad)
    ctx: dict[str, Any] = {"base": base, "forget": forget, "retain": retain, "paraphrase": para, "cad_task": cad_task,
                           "base_acc": base_acc, "circuit": None}
    cells: list[dict[str, Any]] = []
    for method, seed in cfg.cells():
        path = cells_dir / f"{method}-seed{seed}.json"
        if path.exists():
            cell = json.loads(path.read_text())
            if cell.get("config_version") == cfg.version:
                say(f"{method} seed {seed}: done earlier, reused")
                cells.append(cell)
                continue
        if ctx["circuit"] is None:
            ctx["circuit"] = _base_circuit(out_dir / "base_circuit.json", base, cad_task, cfg.ig_steps, say)
        say(f"{method} seed {seed}: running")
        cell = {**run_cell(cfg, method, seed, ctx), "config_version": cfg.version}
        write_json_atomic(path, cell)
        cells.append(cell)
        say(f"{method} seed {seed}: {cell['seconds']:.0f} s")
    summary = summarise(cfg, cells, base_acc)
    meta = {"model": cfg.model, "config": asdict(cfg), "command": command, "base_acc": base_acc,
            "seconds": time.time() - t_start, "cell_seconds": sum(c["seconds"] for c in cells),
            "seeds_run": sorted({c["seed"] for c in cells}), "cores": os.cpu_count(), "versions": versions()}
    write_json_atomic(out_dir / "results.json", {"format": "circuitforge.bench/1", **meta, **summary, "cells": cells})
    write_text_atomic(out_dir / "results.md", markdown(summary, meta))
    write_text_atomic(out_dir / "report.html", _html(summary, meta))
    return {**meta, **summary, "cells": cells}


def _base_circuit(path: Path, base: Any, task: Any, ig_steps: int, say: Any) -> Any:
    """The base model's minimal faithful forget circuit, cached in ``path`` (part of the resumable state).

    A cached circuit is reused only when it was found on the same weights (sha256), the same task rows
    (sha256) and with the same EAP-IG steps; otherwise it is recomputed and the file replaced.
    """
    from circuitforge.circuits import Circuit, minimal_circuit

    if path.exists():
        c = Circuit.from_json(path)
        if c.found_on(base, task) and c.method.get("name") == "eap-ig" and int(c.method.get("ig_steps", -1)) == ig_steps:
            say(f"base forget circuit: reused {path.name} ({c.n_edges} edges)")
            return c
    say("finding the base forget circuit")
    c = minimal_circuit(base, task, faithfulness=0.8, method="eap-ig", ig_steps=ig_steps, baselines=False)
    c.to_json(path)
    return c


def _html(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    import plotly.graph_objects as go

    from circuitforge.viz.report import html_report

    methods = list(summary["table"])
    props = ["forgetting", "retain", "ptq_gap", "structural_erasure"]
    z = [[1 if summary["table"][m]["properties"][p] else 0 for p in props] for m in methods]
    text = [[f"{summary['table'][m]['values'].get(p, '')}" if p != "structural_erasure" else ", ".join(summary["table"][m]["verdicts"])
             for p in props] for m in methods]
    grid = go.Figure(go.Heatmap(z=z, x=props, y=methods, text=text, texttemplate="%{text}", zmin=0, zmax=1,
                                colorscale=[[0, "#f4a6a6"], [1, "#9fd89f"]], showscale=False))
    grid.update_layout(title="Four properties per method (green = pass)", height=120 + 50 * len(methods), template="plotly_white")
    fp = [summary["table"][m]["columns"]["forget fp"][0] for m in methods]
    nf4 = [summary["table"][m]["columns"]["forget NF4"][0] for m in methods]
    surv = go.Figure([go.Bar(x=methods, y=fp, name="forget fp"), go.Bar(x=methods, y=nf4, name="forget NF4")])
    surv.update_layout(barmode="group", title="Forget accuracy before and after NF4", template="plotly_white", height=380)
    md = markdown(summary, meta)
    import html as _h

    return html_report(f"Unlearning benchmark: {meta['model']}", [("Verdicts", grid), ("NF4 survival", surv),
                                                                  ("Table", f"<pre>{_h.escape(md)}</pre>")])
