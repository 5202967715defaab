"""Self-contained HTML reports (plotly.js inlined once; opens offline)."""

import html
from typing import Any


def _fig_div(fig: Any, first: bool) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=bool(first))


def plot_scorecard(properties: dict[str, dict[str, Any]], title: str = "Four-property scorecard") -> Any:
    """One row per property: a green/red cell with the value and threshold."""
    import plotly.graph_objects as go

    names = list(properties)
    ok = [bool(properties[n]["pass"]) for n in names]
    text = [f"{n}: {properties[n]['value']:.3g} (threshold {properties[n]['threshold']:.3g}) — "
            f"{'PASS' if o else 'FAIL'}" for n, o in zip(names, ok, strict=True)]
    fig = go.Figure(go.Bar(y=names, x=[1] * len(names), orientation="h", text=text, textposition="inside",
                           insidetextanchor="start", marker_color=["#2ca02c" if o else "#d62728" for o in ok],
                           hoverinfo="text"))
    fig.update_layout(title=title, xaxis={"visible": False, "range": [0, 1]}, yaxis={"autorange": "reversed"},
                      template="plotly_white", height=90 + 60 * len(names), margin={"l": 140, "r": 20})
    return fig


def html_report(title: str, sections: list[tuple[str, Any]], summary_rows: list[tuple[str, str]] | None = None) -> str:
    """Assemble an HTML page from (heading, figure-or-html-string) sections."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 10px;text-align:left}"
             "h2{margin-top:2em}</style></head><body>", f"<h1>{html.escape(title)}</h1>"]
    if summary_rows:
        parts.append("<table>" + "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                                         for k, v in summary_rows) + "</table>")
    first = True
    for heading, body in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        if isinstance(body, str):
            parts.append(body)
        else:
            # wide figures (a circuit over 30 layers) scroll sideways instead of spilling off the page
            parts.append(f"<div style='overflow-x:auto'>{_fig_div(body, first)}</div>")
            first = False
    parts.append("</body></html>")
    return "\n".join(parts)


def verify_report(card: dict[str, Any], cad_result: dict[str, Any]) -> str:
    """The HTML page of ``circuitforge verify --html``."""
    from circuitforge.viz.cad import plot_cad_null, plot_circuit_diff, plot_layer_mass

    props = card["properties"]
    rows = [("base", f"{card['base']['spec']} ({card['base']['sha256'][:12]})"),
            ("unlearned", f"{card['unlearned']['spec']} ({card['unlearned']['sha256'][:12]})"),
            ("overall", "PASS" if card["pass"] else "FAIL"),
            ("CAD verdict", f"{cad_result['verdict']} (mechanistic z = {cad_result['z']:.1f}, "
                            f"behavioural z = {cad_result['behavioural']['z']:.1f})")]
    rows += [(k, f"{v:.3f}") for k, v in card["accuracies"].items()]
    m = cad_result["mechanistic_upstream"]
    b = cad_result["behavioural"]
    lm = cad_result["layer_mass"]
    sections = [
        ("Scorecard", plot_scorecard(props)),
        ("CAD, mechanistic (M₁'s layers through M₀'s readout, upstream edges)",
         plot_cad_null(m["null"], m["value"], m["z"], "Mechanistic CAD vs split-half null")),
        ("CAD, behavioural (M₁'s own readout)", plot_cad_null(b["null"], b["value"], b["z"], "Behavioural CAD vs split-half null")),
        ("Where the change sits", plot_layer_mass(lm["layers"], lm["base"], {
            "M₁, own readout": lm["edited_own_readout"], "M₁, base readout": lm["edited_base_readout"]})),
        ("Circuit diff (per-edge attribution change, M₁ through M₀'s readout − M₀)", plot_circuit_diff(cad_result)),
    ]
    return html_report("circuitforge verify", sections, rows)
