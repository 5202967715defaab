"""Scorecard bullet charts and the ``verify --html`` page. The page assembly lives in
:mod:`circuitforge.viz.html` (``html_report`` is re-exported here for existing callers)."""

from typing import Any

from circuitforge.viz.html import html_report

PROPERTY_LABELS = {"forgetting": "forget-accuracy drop", "retain": "retain-accuracy drop",
                   "ptq_gap": "NF4 gap (forget acc. NF4 − fp)", "structural_erasure": "CAD z (mechanistic)"}
DIRECTIONS = {"forgetting": "≥", "retain": "≤", "ptq_gap": "≤", "structural_erasure": "≥"}
"""How each scorecard property passes (circuitforge.eval.scorecard): value ≥ or ≤ its threshold."""

def direction(name: str, prop: dict[str, Any]) -> str:
    """``"≥"`` or ``"≤"``: the property's own ``direction`` key (``">="``/``"<="``) when it is one, else the
    scorecard's rule (structural erasure: the CAD z must reach its threshold)."""
    d = str(prop.get("direction", ""))
    return {">=": "≥", "<=": "≤", "≥": "≥", "≤": "≤"}.get(d) or DIRECTIONS.get(name, "≥")


def plot_scorecard(properties: dict[str, dict[str, Any]], title: str = "Four-property scorecard") -> Any:
    """Bullet charts of one scorecard's properties (see :func:`plot_scorecards`)."""
    return plot_scorecards({"": properties}, title)


def plot_scorecards(cards: dict[str, dict[str, dict[str, Any]]], title: str = "Four-property scorecards") -> Any:
    """Bullet charts: one panel per property, one bar per scorecard (``cards``: name → properties).

    Each bar's length is the value (green = pass, red = fail; value and PASS/FAIL written in a column on
    the right), a black tick marks the threshold, and the 95% CI is an error bar when the property has
    ``ci`` ([lo, hi]). The panel title states the rule (≥ / ≤ threshold). Methods share a panel's x-axis (a
    z-score and an accuracy drop do not share one). One column, so it reads on a phone."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    names = list(dict.fromkeys(p for props in cards.values() for p in props))
    cols = list(cards)
    titles = []
    for n in names:
        first = next(cards[c][n] for c in cols if n in cards[c])
        titles.append(_bullet_title(n, first))
    heights = [len([c for c in cols if n in cards[c]]) for n in names]
    fig = make_subplots(rows=max(1, len(names)), cols=1, row_heights=[h + 0.6 for h in heights] or None,
                        vertical_spacing=0.35 / max(1, len(names)), subplot_titles=titles)
    for i, n in enumerate(names, start=1):
        lo, hi = 0.0, 0.0
        labels: list[tuple[str, str]] = []
        for c in cols:
            p = cards[c].get(n)
            if p is None:
                continue
            v, thr = float(p["value"]), float(p["threshold"])
            lo, hi = min(lo, v, thr), max(hi, v, thr)
            ci, err = p.get("ci"), None
            if ci and len(ci) == 2 and None not in ci:
                err = {"type": "data", "symmetric": False, "array": [float(ci[1]) - v], "arrayminus": [v - float(ci[0])],
                       "color": "#222", "thickness": 1.5, "width": 5}
                lo, hi = min(lo, float(ci[0])), max(hi, float(ci[1]))
            who = c or "value"
            fig.add_trace(go.Bar(x=[v], y=[who], orientation="h", error_x=err, width=0.55, name=f"{c} {n}".strip(),
                                 marker_color="#2ca02c" if p.get("pass") else "#d62728", showlegend=False,
                                 hovertemplate=f"{who}: {_bar_text(p)}, threshold {thr:.4g}<extra></extra>"),
                          row=i, col=1)
            fig.add_trace(go.Scatter(x=[thr], y=[who], mode="markers", showlegend=False, name="threshold",
                                     marker={"symbol": "line-ns", "size": 22, "line": {"width": 3, "color": "#111"}},
                                     hovertemplate=f"threshold {thr:.4g}<extra></extra>"), row=i, col=1)
            labels.append((who, f"{float(p['value']):.3g} {'PASS' if p.get('pass') else 'FAIL'}"))
        span = (hi - lo) or 1.0
        right = hi + 0.4 * span  # a column on the right for "value PASS/FAIL", clear of bars and whiskers
        fig.add_trace(go.Scatter(x=[right] * len(labels), y=[w for w, _ in labels], text=[t for _, t in labels],
                                 mode="text", textposition="middle left", showlegend=False, hoverinfo="skip",
                                 name="values", textfont={"size": 11}), row=i, col=1)
        fig.update_xaxes(range=[lo - 0.05 * span, right], zeroline=True, zerolinecolor="#999", row=i, col=1)
        fig.update_yaxes(autorange="reversed", row=i, col=1)
    fig.update_annotations(font_size=11, x=0, xanchor="left")
    fig.update_layout(title=f"{title}<br><sup>bar = value · black tick = threshold · whisker = 95% CI</sup>",
                      template="plotly_white", autosize=True, title_font_size=14, showlegend=False,
                      height=90 + sum(45 + 28 * h for h in heights), bargap=0.3,
                      margin={"l": 60, "r": 10, "t": 80, "b": 20})
    return fig


def _bar_text(p: dict[str, Any]) -> str:
    """The number written next to a bullet bar: value, CI, CI call, PASS/FAIL."""
    ci = p.get("ci")
    ci_s = f" [{ci[0]:.2g}, {ci[1]:.2g}]" if ci and len(ci) == 2 and None not in ci else ""
    call = f" CI {p['call']}" if "call" in p else ""
    return f"{float(p['value']):.3g}{ci_s}{call} {'PASS' if p.get('pass') else 'FAIL'}"


def _bullet_title(name: str, p: dict[str, Any]) -> str:
    """The rule of a property: ``forget-accuracy drop: passes when ≥ 0.3``."""
    extra = f" (n = {p['n']})" if "n" in p else ""
    return (f"<b>{p.get('label') or PROPERTY_LABELS.get(name, name)}</b>: passes when {direction(name, p)} "
            f"{float(p['threshold']):.3g}{extra}")


def relearn_row(relearn: dict[str, Any] | None) -> str:
    """The verify page's one-line account of the relearning attack (``relearn`` block of the verify JSON)."""
    if relearn is None:
        return "not run (--no-relearn): nothing here measures whether the knowledge comes back"
    if relearn.get("skipped"):
        return f"not run: {relearn['skipped']}"
    if relearn.get("recovery") is None:
        return "undefined: the checkpoint forgot nothing the attack could bring back"
    ci = relearn.get("ci")
    text = f"recovery {relearn['recovery']:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")
    text += f" after {relearn.get('best_budget')} steps ({relearn.get('n_held')} held-out rows)"
    if "threshold" in relearn:
        text += (f"; gate ≤ {relearn['threshold']:.2f}: {'pass' if relearn['pass'] else 'FAIL'} "
                 f"(from the CI: {relearn.get('call')})")
    else:
        text += "; reported only (--max-relearn inf)"
    return text


def verify_report(card: dict[str, Any], cad_result: dict[str, Any], relearn: dict[str, Any] | None = None) -> str:
    """The HTML page of ``circuitforge verify --html``: the overall call, the CAD verdict with its erasure
    score and rule, the relearning attack (``relearn``: the verify JSON's block, ``None`` when not run), the
    notes, the scorecard, the hybrid recovery curve and the circuit diff."""
    from circuitforge.viz.cad import plot_cad_null, plot_hybrid_recovery, plot_layer_mass, recovery_curves
    from circuitforge.viz.diff import plot_edge_diff, plot_layer_change

    props = card["properties"]
    ev = cad_result.get("evidence") or {}
    verdict = f"{cad_result['verdict']}"
    if ev.get("erasure_score") is not None and ev.get("erasure_score_ci"):
        lo, hi = ev["erasure_score_ci"]
        verdict += f" (erasure score E {ev['erasure_score']:.2f} [{lo:.2f}, {hi:.2f}])"
    if ev.get("rule"):
        verdict += f": {ev['rule']}"
    rows = [("base", f"{card['base']['spec']} ({card['base']['sha256'][:12]})"),
            ("unlearned", f"{card['unlearned']['spec']} ({card['unlearned']['sha256'][:12]})"),
            ("overall", "PASS" if card["pass"] else "FAIL"),
            ("CAD verdict", verdict),
            ("paper's CAD", f"{cad_result['value']:.3f} (mechanistic z = {cad_result['z']:.1f}, "
                            f"behavioural z = {cad_result['behavioural']['z']:.1f})"),
            ("relearning attack", relearn_row(relearn))]
    rows += [("note", n) for n in card.get("notes", [])]
    rows += [(k, f"{v:.3f}") for k, v in card["accuracies"].items()]
    m = cad_result["mechanistic_upstream"]
    b = cad_result["behavioural"]
    lm = cad_result["layer_mass"]
    sections: list[tuple[str, Any]] = [("Scorecard", plot_scorecard(props))]
    if recovery_curves(cad_result):
        sections.append(("Recovery evidence: layer hybrids (the verdict's erasure score reads these curves)",
                         plot_hybrid_recovery(cad_result)))
    sections += [
        ("Circuit diff: the changed edges", plot_edge_diff({"unlearned": cad_result})),
        ("Attribution lost and gained per layer (M₁ through M₀'s readout − M₀)",
         plot_layer_change({"unlearned": cad_result})),
        ("Where the change sits", plot_layer_mass(lm["layers"], lm["base"], {
            "M₁, own readout": lm["edited_own_readout"], "M₁, base readout": lm["edited_base_readout"]})),
        ("Paper's CAD, mechanistic (M₁'s layers through M₀'s readout, upstream edges)",
         plot_cad_null(m["null"], m["value"], m["z"], "Mechanistic CAD vs split-half null")),
        ("Paper's CAD, behavioural (M₁'s own readout)",
         plot_cad_null(b["null"], b["value"], b["z"], "Behavioural CAD vs split-half null")),
    ]
    for heading, fig in sections:  # figures from viz.cad: follow the page width, name the histogram's y-axis
        fig.update_layout(autosize=True, width=None)
        if heading.startswith("Paper's CAD"):
            fig.update_layout(yaxis_title="split-half null draws (count)")
    return html_report("circuitforge verify", sections, rows)
