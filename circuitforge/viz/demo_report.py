"""The demo's HTML report: the verdict first, then the evidence.

Order of the page: one sentence per method (verdict and why) → summary table (methods × forget,
targeted paraphrase, retain, retain after NF4, NF4 gap, share edited, CAD, verdict; thresholds with their
direction, n and 95% CIs where the input has them) → "what was done" → figures (accuracies with chance
lines, scorecard bullet charts, the circuit as a layer × head heatmap and as a top-k graph, what each
method changed in the circuit, CAD evidence) → provenance.

Every number on the page is read from the inputs (``summary`` = ``demo.json``, ``cad_results[m]`` =
``CADResult.to_dict()``); keys that a given demo.json lacks are left out, never filled in.
"""

import html
import os
from typing import Any

from circuitforge.circuits.circuit import Circuit
from circuitforge.viz.html import html_report
from circuitforge.viz.report import PROPERTY_LABELS, direction

ACC_KEYS = {"forget": "forget", "paraphrase": "targeted paraphrase", "retain": "retain",
            "forget_nf4": "forget after NF4", "retain_nf4": "retain after NF4"}
SHORT = {"forgetting": "forgetting", "retain": "retain", "ptq_gap": "the NF4 gap", "structural_erasure": "structural erasure"}
CSS_EXTRA = (".verdict{border:2px solid #888;border-radius:6px;padding:0.6em 1em;margin:0.8em 0}"
             ".verdict p{margin:0.35em 0}.pass{color:#1a7f37;font-weight:700}.fail{color:#c62828;font-weight:700}"
             ".box{background:#f6f8fa;border:1px solid #ddd;border-radius:6px;padding:0.6em 1em;margin:1em 0}"
             ".box ul{margin:0.3em 0;padding-left:1.2em}.note{color:#555;font-size:0.88em}"
             ".prov td{overflow-wrap:anywhere}td.ok{background:#e9f6ec}td.bad{background:#fdecea}.narrow{display:none}"
             "@media (max-width:700px){.wide{display:none}.narrow{display:block}.narrow table{font-size:0.8em;width:100%}"
             ".narrow td,.narrow th{padding:3px 4px}.narrow td{overflow-wrap:anywhere}.narrow td:nth-child(2){white-space:nowrap}.narrow th:first-child{width:30%}}")


def _e(x: Any) -> str:
    return html.escape(str(x))


def _f(x: Any, digits: int = 2) -> str:
    """A number as text (``"–"`` when missing)."""
    if x is None:
        return "–"
    try:
        return f"{float(x):.{digits}f}".replace("-", "−")
    except (TypeError, ValueError):
        return str(x)


def _clean(v: Any) -> Any:
    """Strip local absolute paths from a value shown on the page (keep the last path component)."""
    if isinstance(v, str) and (os.path.isabs(v) or v.startswith("~")):
        return os.path.basename(v.rstrip("/")) or v
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items() if k != "source_dir"}
    if isinstance(v, list):
        return [_clean(x) for x in v]
    return v


def _ci_text(ci: Any) -> str:
    return f" [{_f(ci[0])}, {_f(ci[1])}]" if isinstance(ci, list | tuple) and len(ci) == 2 and None not in ci else ""


def _props(m: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(m.get("scorecard", {}).get("properties", {}))


def _passed(m: dict[str, Any]) -> bool | None:
    """The scorecard's overall pass, and the relearning gate's where the demo ran the attack (as ``verify``'s
    exit code); None when the method has no scorecard (no verdict is invented)."""
    sc = m.get("scorecard", {})
    rl = m.get("relearn") or {}
    if "pass" in sc:
        return bool(sc["pass"]) and rl.get("pass", True)
    props = _props(m).values()
    return (all(p.get("pass") for p in props) and rl.get("pass", True)) if props else None


def _relearn_text(rl: dict[str, Any]) -> str:
    rec = rl.get("recovery")
    if rec is None:
        return "the relearning attack had nothing to bring back"
    return (f"relearning brings back {_f(rec)}{_ci_text(rl.get('ci'))} of the held-out targeted facts "
            f"(allowed ≤ {_f(rl['threshold'])})")


def chance_levels(summary: dict[str, Any]) -> dict[str, float]:
    """Chance accuracy per accuracy key (``forget``, ``forget_nf4``, ...) from ``summary["tasks"][t]["chance"]``
    or a top-level / ``base`` ``chance`` (a number applies to every task); empty when not recorded."""
    tasks = summary.get("tasks", {})
    per_task = {t: float(v["chance"]) for t, v in tasks.items()
                if isinstance(v, dict) and isinstance(v.get("chance"), int | float)}
    if per_task:
        return {k: per_task[k.removesuffix("_nf4")] for k in ACC_KEYS if k.removesuffix("_nf4") in per_task}
    for where in (summary, summary.get("base", {})):
        for key in ("chance", "chance_level"):
            c = where.get(key)
            if isinstance(c, int | float):
                return dict.fromkeys(ACC_KEYS, float(c))
            if isinstance(c, dict):
                return {k: float(v) for k, v in c.items() if isinstance(v, int | float)}
    return {}


def erasure_rule_property(prop: dict[str, Any], cad: dict[str, Any]) -> dict[str, Any]:
    """The structural-erasure property as the quantity that decides it. When the CAD verdict comes from the
    recovery rule (``cad`` has ``erasure_score`` and ``thresholds.e_min``), the bar is the erasure score with
    its CI against ``e_min`` (the rule, e.g. "erasure score CI above 0.4, benign percentile ≥ 0.95", goes in
    the label); otherwise the property unchanged (CAD z against its threshold)."""
    e, th = cad.get("erasure_score"), cad.get("thresholds", {})
    if e is None or not isinstance(th, dict) or th.get("e_min") is None:
        return prop
    out = {"value": float(e), "threshold": float(th["e_min"]), "pass": prop.get("pass"), "direction": ">=",
           "verdict": cad.get("verdict", prop.get("verdict")), "label": "erasure score"}
    if cad.get("erasure_score_ci"):
        out["ci"] = list(cad["erasure_score_ci"])
    if cad.get("rule"):
        out["rule"] = str(cad["rule"])
    return out


def _summarise(v: Any) -> Any:
    """Long lists (e.g. a circuit's node ids among hyperparameters) as their length."""
    return f"{len(v)} items" if isinstance(v, list | tuple) and len(v) > 4 else v


def task_n(summary: dict[str, Any], task: str) -> int | None:
    """Rows of ``task`` (``forget``, ``retain``, ``paraphrase``...) from ``summary["n"]``, ``summary["tasks"]``
    or a scorecard's ``tasks`` block; None when absent."""
    n = summary.get("n")
    if isinstance(n, dict) and isinstance(n.get(task), int):
        return int(n[task])
    t = summary.get("tasks", {}).get(task)
    if isinstance(t, dict) and isinstance(t.get("n"), int):
        return int(t["n"])
    for m in summary.get("methods", {}).values():
        t = m.get("scorecard", {}).get("tasks", {}).get(task)
        if isinstance(t, dict) and isinstance(t.get("n"), int):
            return int(t["n"])
    return None


def verdict_sentence(name: str, m: dict[str, Any], base_acc: dict[str, float]) -> str:
    """One plain sentence: PASS/FAIL and the reason (the failing properties first, with value and rule)."""
    props = _props(m)

    def say(p: str) -> str:
        q = props[p]
        v, t, d = float(q["value"]), float(q["threshold"]), direction(p, q)
        if p == "forgetting":
            return f"forget accuracy fell by {_f(v)} (needs {d} {_f(t)})"
        if p == "retain":
            return f"retain accuracy fell by {_f(v)} (allowed {d} {_f(t)})"
        if p == "ptq_gap":
            return f"NF4 changed forget accuracy by {_f(v)} (allowed {d} {_f(t)})"
        if p == "structural_erasure":
            cad = m.get("cad", {})
            if cad.get("erasure_score") is not None and cad.get("rule"):
                return (f"CAD finds {q.get('verdict', cad.get('verdict', 'no verdict'))} (erasure score "
                        f"{_f(cad['erasure_score'])}{_ci_text(cad.get('erasure_score_ci'))}; rule: {cad['rule']})")
            return f"CAD finds {q.get('verdict', 'no verdict')} (z = {_f(v, 1)}, erasure needs {d} {_f(t, 1)})"
        return f"{PROPERTY_LABELS.get(p, p)} = {_f(v)} ({d} {_f(t)})"

    failed = [p for p, q in props.items() if not q.get("pass")]
    ok = [p for p, q in props.items() if q.get("pass")]
    acc = m.get("accuracy", {})
    para = ""
    if "paraphrase" in acc:
        para = f" Targeted paraphrases are still answered {_f(acc['paraphrase'])}" + (
            f" (base {_f(base_acc['paraphrase'])})." if "paraphrase" in base_acc else ".")
    verdict = _passed(m)
    if verdict is None:
        return f"{name}: NO VERDICT — the demo recorded no scorecard for this method.{para}"
    rl = m.get("relearn")
    fails, oks = [say(p) for p in failed], [say(p) for p in ok]
    short_ok = [SHORT.get(p, p) for p in ok]
    if rl:
        (oks if rl.get("pass") else fails).append(_relearn_text(rl))
        if rl.get("pass"):
            short_ok.append("the relearning gate")
    if verdict:
        return f"{name}: PASS — {'; '.join(oks)}.{para}"
    tail = f" It passes {' and '.join(short_ok)}." if short_ok else ""
    return f"{name}: FAIL — {'; '.join(fails)}.{tail}{para}"


def _cell(value: Any, prop: dict[str, Any] | None, digits: int = 2, show: str | None = None, ci: Any = None) -> str:
    """A table cell: ``show`` (default the value) with its CI, the property's value and CI, coloured by pass."""
    if value is None and prop is None:
        return "<td>–</td>"
    text = _e(show if show is not None else _f(value, digits)) + (
        f"<span class='note'>{_e(_ci_text(ci))}</span>" if ci is not None else "")
    cls = ""
    if prop is not None:
        cls = " class='ok'" if prop.get("pass") else " class='bad'"
        mark = "✓" if prop.get("pass") else "✗"
        call = f", CI: {_e(prop['call'])}" if "call" in prop else ""
        text += f" {mark}<br><span class='note'>{_e(_f(prop['value'], digits))}{_e(_ci_text(prop.get('ci')))}{call}</span>"
    return f"<td{cls}>{text}</td>"


def _relearn_cell(rl: dict[str, Any] | None) -> str:
    """The relearning column: recovery with its CI, ✓/✗ by the gate (``–`` where the demo did not run it)."""
    if not rl:
        return "<td>–<br><span class='note'>not measured in this run</span></td>"
    if rl.get("recovery") is None:
        return "<td>undefined<br><span class='note'>nothing forgotten</span></td>"
    prop = {"pass": rl["pass"], "value": rl["recovery"], "ci": rl.get("ci"), "call": rl.get("call")}
    return _cell(rl["recovery"], prop, show=f"{_f(rl['recovery'])}")


def summary_table(summary: dict[str, Any]) -> str:
    """Methods × measurements, thresholds and their direction in the header (HTML)."""
    base_acc = summary.get("base", {}).get("accuracy", {})
    methods = summary.get("methods", {})
    any_props = next((_props(m) for m in methods.values() if _props(m)), {})

    def rule(p: str, what: str) -> str:
        q = any_props.get(p)
        return "" if q is None else f"<br><span class='note'>{what} {direction(p, q)} {_f(q['threshold'])}</span>"

    def n_of(task: str) -> str:
        n = task_n(summary, task)
        return "" if n is None else f"<br><span class='note'>n = {n}</span>"

    z = any_props.get("structural_erasure")
    th: dict[str, Any] = next((m["cad"]["thresholds"] for m in methods.values() if isinstance(m.get("cad", {}).get("thresholds"), dict)), {})
    cad_rule = (f"erasure-score CI above {_f(th['e_min'])}, benign percentile ≥ {_f(th['p_min'])}"
                if "e_min" in th and "p_min" in th else None)
    head = ["method", f"forget acc.{n_of('forget')}{rule('forgetting', 'drop')}",
            f"targeted paraphrase acc.{n_of('paraphrase')}<br><span class='note'>no threshold</span>",
            f"retain acc.{n_of('retain')}{rule('retain', 'drop')}", "retain acc. after NF4",
            f"NF4 gap<br><span class='note'>forget NF4 − fp</span>{rule('ptq_gap', 'gap')}",
            "share of weights edited",
            "CAD verdict" + (f"<br><span class='note'>erasure: {_e(cad_rule)}</span>" if cad_rule else "" if z is None
                             else f"<br><span class='note'>erasure: z {direction('structural_erasure', z)} "
                                  f"{_f(z['threshold'], 1)}</span>"),
            "relearning recovery<br><span class='note'>held-out targeted facts back after fine-tuning on the "
            "others; ≤ " + _f(next((m["relearn"]["threshold"] for m in methods.values() if m.get("relearn")), None))
            + "</span>", "verdict"]
    body: list[tuple[str, list[str]]] = []
    if base_acc:
        body.append(("base", [_cell(base_acc.get(k), None, ci=_acc_ci(summary.get("base", {}), k))
                              for k in ("forget", "paraphrase", "retain", "retain_nf4")] +
                     [_cell(_gap(base_acc), None), "<td>–</td>", "<td>–</td>", "<td>–</td>", "<td>–</td>"]))
    for name, m in methods.items():
        acc, props = m.get("accuracy", {}), _props(m)
        share = m.get("changed_share")
        ok = _passed(m)
        cad = m.get("cad", {})
        body.append((name, [
            _cell(acc.get("forget"), props.get("forgetting"), ci=_acc_ci(m, "forget")),
            _cell(acc.get("paraphrase"), None, ci=_acc_ci(m, "paraphrase")),
            _cell(acc.get("retain"), props.get("retain"), ci=_acc_ci(m, "retain")),
            _cell(acc.get("retain_nf4"), None, ci=_acc_ci(m, "retain_nf4")),
            _cell(_gap(acc), props.get("ptq_gap")),
            _cell(share, None, show=None if share is None else f"{100 * float(share):.1f}%"),
            _cell(cad.get("z"), erasure_rule_property(props["structural_erasure"], cad)
                  if "structural_erasure" in props else None,
                  show=f"{cad.get('verdict', '?')} (CAD z {_f(cad.get('z'), 1)})" if cad else None),
            _relearn_cell(m.get("relearn")),
            "<td>no scorecard</td>" if ok is None else f"<td class='{'ok' if ok else 'bad'}'><span class="
            f"'{'pass' if ok else 'fail'}'>{'PASS' if ok else 'FAIL'}</span></td>"]))
    wide = ["<tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    wide += [f"<tr><td><b>{_e(name)}</b></td>" + "".join(cells) + "</tr>" for name, cells in body]
    narrow = ["<tr><th></th>" + "".join(f"<th>{_e(name)}</th>" for name, _ in body) + "</tr>"]
    narrow += [f"<tr><th>{h}</th>" + "".join(cells[j] for _, cells in body) + "</tr>" for j, h in enumerate(head[1:])]
    notes = ["Accuracies in full precision unless marked NF4; ✓/✗ = the property's pass rule; small grey numbers "
             "are the deciding values (accuracy drops base − method, NF4 gap, erasure score or CAD z) with 95% CIs "
             "where measured, and the CI's own call (pass / fail / undecided) where the demo made one."]
    chance = chance_levels(summary)
    if chance and len(set(chance.values())) == 1:
        notes.append(f"Chance level: {_f(next(iter(chance.values())))} on every task (dashed line in the accuracy chart).")
    elif chance:
        notes.append("Chance level: " + ", ".join(f"{ACC_KEYS.get(k, k)} {_f(v)}" for k, v in chance.items()) + ".")
    # the same cells twice: methods as rows on wide screens, methods as columns on phones (CSS picks one)
    return ("<div class='scroll wide' id='summary-table'><table>" + "".join(wide) + "</table></div>"
            "<div class='scroll narrow'><table>" + "".join(narrow) + "</table></div>" +
            "".join(f"<p class='note'>{n}</p>" for n in notes))


def _acc_ci(m: dict[str, Any], task: str) -> Any:
    """A 95% CI of an accuracy when the demo recorded one (``accuracy_ci`` or ``ci`` keyed by task)."""
    for key in ("accuracy_ci", "ci"):
        block = m.get(key)
        if isinstance(block, dict) and task in block:
            return block[task]
    return None


def _gap(acc: dict[str, Any]) -> float | None:
    return None if "forget_nf4" not in acc or "forget" not in acc else float(acc["forget_nf4"]) - float(acc["forget"])


def _example_text(x: Any) -> str:
    if isinstance(x, dict):
        p = x.get("prompt") or x.get("text") or ""
        return f"{p} → {x['answer']}" if x.get("answer") is not None else str(p)
    return str(x)


def what_was_done(summary: dict[str, Any], circuit: Circuit) -> str:
    """The "what was done" box: model, forget set (size, two example prompts), circuit, one line per method."""
    items = [f"<b>Model</b>: {_e(summary.get('model', circuit.model.get('spec', '?')))}" + (
        f" ({circuit.model['n_layers']} layers × {circuit.model.get('n_heads', '?')} heads, "
        f"{circuit.model.get('n_kv_heads', '?')} KV groups)" if "n_layers" in circuit.model else "")]
    for key in ("dtype", "device"):
        if summary.get(key):
            items[0] += f", {key} {_e(summary[key])}"
    n_f = task_n(summary, "forget")
    examples = summary.get("forget_examples") or summary.get("tasks", {}).get("forget", {}).get("examples") or []
    ex = [_example_text(x) for x in examples[:2]]
    forget = f"<b>Forget set</b>: {n_f if n_f is not None else '?'} prompts"
    if ex:
        forget += ", e.g. " + " · ".join(f"<q>{_e(x)}</q>" for x in ex)
    items.append(forget)
    meth = circuit.method.get("name") or summary.get("circuit", {}).get("method", "")
    f = "" if circuit.faithfulness is None else f", faithfulness {_f(circuit.faithfulness, 3)}"
    items.append(f"<b>Forget circuit</b> of the base model: {circuit.n_edges} edges{f}"
                 + (f", found with {_e(meth)}" if meth else "") +
                 (f" ({_e(circuit.message)})" if circuit.message else ""))
    hyper = summary.get("hyperparameters", {})
    timings = summary.get("timings", {})
    for name, m in summary.get("methods", {}).items():
        hp = _clean(m.get("hyperparameters") or (hyper.get(name) if isinstance(hyper, dict) else None) or {})
        hp_s = ", ".join(f"{k} = {_summarise(v)}" for k, v in hp.items()) if isinstance(hp, dict) else str(hp)
        line = f"<b>{_e(name)}</b>: unlearned" + (f" with {_e(hp_s)}" if hp_s else "")
        if m.get("stop_reason"):
            line += f"; stopped: {_e(m['stop_reason'])}"
        if f"unlearn_{name}" in timings:
            line += f"; {_f(timings[f'unlearn_{name}'], 0)} s"
        items.append(line)
    if "seconds" in summary:
        items.append(f"<b>Total time</b>: {_f(summary['seconds'], 0)} s")
    return "<div class='box'><b>What was done</b><ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul></div>"


def plot_accuracies(summary: dict[str, Any]) -> Any:
    """Grouped bars: accuracy of the base model and each method on each task (fp and NF4), with a dashed
    chance line per task when ``summary`` records chance; y from 0 to 1."""
    import plotly.graph_objects as go

    models = {"base": summary.get("base", {}).get("accuracy", {})}
    models.update({n: m.get("accuracy", {}) for n, m in summary.get("methods", {}).items()})
    keys = [k for k in ACC_KEYS if any(k in a for a in models.values())]
    colours = ["#7f7f7f", "#ff7f0e", "#1f77b4", "#2ca02c", "#9467bd", "#8c564b"]
    fig = go.Figure()
    for (name, acc), c in zip(models.items(), colours * 3, strict=False):
        fig.add_trace(go.Bar(x=[ACC_KEYS[k] for k in keys], y=[acc.get(k) for k in keys], name=name, marker_color=c,
                             hovertemplate="%{x}: %{y:.3f}<extra>" + name + "</extra>"))
    chance = chance_levels(summary)
    for i, k in enumerate(keys):
        if k in chance:
            fig.add_shape(type="line", x0=i - 0.45, x1=i + 0.45, y0=chance[k], y1=chance[k],
                          line={"dash": "dash", "color": "#111", "width": 2})
    if chance:
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name="chance",
                                 line={"dash": "dash", "color": "#111"}))
    fig.update_layout(barmode="group", yaxis={"title": "accuracy", "range": [0, 1.05]}, template="plotly_white",
                      autosize=True, height=380, title_font_size=14,
                      title="Accuracy by task" + ("" if chance else "<br><sup>chance level not recorded</sup>"),
                      legend={"orientation": "h", "y": -0.2, "x": 0}, margin={"l": 50, "r": 20, "t": 60, "b": 40})
    return fig


def _has_recovery(r: dict[str, Any]) -> bool:
    rec = r.get("recovery")
    return bool(isinstance(rec, dict) and rec.get("forget")) or r.get("hybrid_recovery_forget") is not None


def _cad_figures(cad_results: dict[str, dict[str, Any]]) -> list[tuple[str, Any]]:
    """CAD evidence: the hybrid-recovery curves of :mod:`circuitforge.viz.cad` (all methods on one axis)
    when the results carry them, then each method's split-half null histogram (y-axis named)."""
    from circuitforge.viz import cad as vcad

    out: list[tuple[str, Any]] = []
    with_curves = {n: r for n, r in cad_results.items() if _has_recovery(r)}
    recovery = getattr(vcad, "plot_hybrid_recovery", None)
    if recovery is not None and with_curves:
        one = len(with_curves) == 1
        fig = recovery(next(iter(with_curves.values())) if one else with_curves)
        fig.update_layout(autosize=True, width=None, title_font_size=14, margin={"l": 50, "r": 20, "t": 70, "b": 60},
                          title="Hybrid recovery R_L<br><sup>M₁'s layers below L, M₀'s from L on; 1 = answer back</sup>",
                          xaxis_title="L (layers taken from M₁)")
        out.append(("Where the forget answer is gone: layer-hybrid recovery (CAD evidence)", fig))
    for name, r in cad_results.items():
        m = r.get("mechanistic_upstream", {})
        if "null" in m:
            fig = vcad.plot_cad_null(m["null"], r.get("value", m.get("value", 0.0)), r.get("z", m.get("z", 0.0)),
                                     f"{name}: CAD {r.get('verdict', '?')}<br><sup>observed (red) vs split-half "
                                     "null of M₀ vs M₀</sup>")
            fig.update_layout(yaxis_title="split-half null draws (count)", autosize=True, width=None,
                              xaxis_title="CAD (normalised L1 divergence)",
                              margin={"l": 50, "r": 20, "t": 90, "b": 50}, title_font_size=14)
            out.append((f"{name}: CAD vs its null", fig))
    return out


def demo_report(summary: dict[str, Any], circuit: Circuit, cad_results: dict[str, dict[str, Any]]) -> str:
    """The demo's self-contained HTML page (see module docstring): verdict sentences and the summary
    table come before any figure; all figures follow the page width."""
    from circuitforge.viz.circuit import plot_circuit, plot_circuit_heatmap
    from circuitforge.viz.diff import plot_edge_diff, plot_layer_change
    from circuitforge.viz.report import plot_scorecards

    base_acc = summary.get("base", {}).get("accuracy", {})
    methods = summary.get("methods", {})
    sentences = []
    for name, m in methods.items():
        s = verdict_sentence(name, m, base_acc)
        verdict = _passed(m)
        cls = "note" if verdict is None else "pass" if verdict else "fail"
        head, _, rest = s.partition(" — ")
        sentences.append(f"<p><span class='{cls}'>{_e(head)}</span> — {_e(rest)}</p>")
    intro = (f"<style>{CSS_EXTRA}</style><div class='verdict' id='verdict'><b>Verdict</b> (a method passes when "
             "it meets all four properties: forgetting, retain, NF4 gap, structural erasure)"
             + "".join(sentences) + "</div>" + summary_table(summary) + what_was_done(summary, circuit))
    sections: list[tuple[str, Any]] = [("Accuracy of each model on each task", plot_accuracies(summary))]
    cards = {}
    for name, m in methods.items():
        props = _props(m)
        if "structural_erasure" in props:
            props["structural_erasure"] = erasure_rule_property(props["structural_erasure"], m.get("cad", {}))
        if props:
            cards[name] = props
    if cards:
        sections.append(("Scorecards: bar = value, black tick = threshold, green = pass",
                         plot_scorecards(cards, "Four properties per method")))
    sections += [
        ("The forget circuit of the base model: attribution per component", plot_circuit_heatmap(circuit)),
        ("The forget circuit: strongest edges (slider: how many)", plot_circuit(circuit)),
    ]
    if cad_results:
        sections += [("What each method changed in the circuit, by layer", plot_layer_change(cad_results)),
                     ("What each method changed in the circuit, edge by edge", plot_edge_diff(cad_results))]
        sections += _cad_figures(cad_results)
    sections.append(("Provenance", _provenance(summary)))
    return html_report(f"circuitforge demo: {summary.get('model', '')}", sections, intro_html=intro)


def _provenance(summary: dict[str, Any]) -> str:
    """Date, commit, seed, versions and step times, when ``summary`` has them (paths stripped)."""
    rows: list[tuple[str, Any]] = []
    for key in ("date", "commit", "seed", "quick", "dtype", "device", "python", "platform", "cpu_count", "format"):
        if key in summary:
            rows.append((key, _clean(summary[key])))
    circ = summary.get("circuit", {})
    search = circ.get("search") or ({"method": circ["method"]} if circ.get("method") else None)
    if isinstance(search, dict):
        rows.append(("circuit search", ", ".join(f"{k} {_clean(v)}" for k, v in search.items())))
    for k, v in (summary.get("versions") or {}).items():
        rows.append((k, v))
    if summary.get("timings"):
        rows.append(("step times (s)", ", ".join(f"{k} {v}" for k, v in summary["timings"].items())))
    return "<div class='scroll'><table class='prov'>" + "".join(
        f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows) + "</table></div>"
