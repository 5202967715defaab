"""Plotly figures for CAD: the hybrid recovery curve (the verdict's evidence), the null histogram with
the observed value, per-layer attribution mass of the base circuit in M₀ vs M₁, the circuit diff and a
ROC curve. Figures are returned (they render inline in Jupyter) and can be written as self-contained HTML
with :func:`save_html` / :func:`save_html_many`. plotly is imported lazily."""

import os
from typing import Any

from circuitforge._provenance import write_text_atomic


def save_html(fig: Any, path: str | os.PathLike[str]) -> None:
    """Write a self-contained HTML file (plotly.js inlined, works offline)."""
    write_text_atomic(path, fig.to_html(include_plotlyjs=True, full_html=True))


def save_html_many(figs: list[Any], path: str | os.PathLike[str], title: str = "circuitforge") -> None:
    """Several figures in one self-contained HTML file (plotly.js inlined once)."""
    divs = [f.to_html(include_plotlyjs=(i == 0), full_html=False) for i, f in enumerate(figs)]
    write_text_atomic(path, f"<html><head><meta charset='utf-8'><title>{title}</title></head><body>"
                      + "\n".join(divs) + "</body></html>")


def recovery_curves(cad: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"forget": {layers, recovery, recovery_ci}, "retain": ...}`` from a ``CADResult.to_dict()`` or a
    ``CADResult.summary()``."""
    rec = cad.get("recovery")
    if isinstance(rec, dict) and rec.get("forget"):
        return {k: rec[k] for k in ("forget", "retain") if rec.get(k)}
    out = {}
    for side in ("forget", "retain"):
        if cad.get(f"hybrid_recovery_{side}") is not None:
            out[side] = {"layers": cad["hybrid_layers"], "recovery": cad[f"hybrid_recovery_{side}"],
                         "recovery_ci": cad.get(f"hybrid_recovery_{side}_ci")}
    return out


def plot_hybrid_recovery(cad_dict: dict[str, Any], title: str | None = None) -> Any:
    """Hybrid recovery R_L against L (M₁'s layers < L, then M₀'s): 1 = M₀'s answer preference comes back,
    0 = none. Forget rows solid with their 95% CI band, retain rows dashed. ``cad_dict`` is a
    ``CADResult.to_dict()`` or ``.summary()``, or a mapping ``name → such dict`` (one forget curve each)."""
    import plotly.graph_objects as go

    many = not recovery_curves(cad_dict) and all(isinstance(v, dict) for v in cad_dict.values())
    items = list(cad_dict.items()) if many else [("", cad_dict)]
    fig = go.Figure()
    palette = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f", "#17becf"]
    for i, (name, d) in enumerate(items):
        c = recovery_curves(d)
        colour = palette[i % len(palette)]
        for side, dash in (("forget", "solid"), ("retain", "dash")):
            if side not in c or (many and side == "retain"):
                continue
            xs, ys, ci = c[side]["layers"], c[side]["recovery"], c[side].get("recovery_ci")
            label = f"{name} ({side})" if many else f"{side} rows"
            if ci and not many:
                fig.add_trace(go.Scatter(x=list(xs) + list(xs)[::-1], y=[h for _, h in ci] + [lo for lo, _ in ci][::-1],
                                         fill="toself", line={"width": 0}, fillcolor="rgba(150,150,150,0.25)",
                                         hoverinfo="skip", showlegend=False))
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=label,
                                     line={"color": colour if many else ("#d62728" if side == "forget" else "#1f77b4"),
                                           "dash": dash}))
    verdict = "" if many else f" — verdict {cad_dict.get('verdict', '?')}"
    fig.add_hline(y=1.0, line_color="#999", line_dash="dot")
    fig.add_hline(y=0.0, line_color="#999", line_dash="dot")
    fig.update_layout(title=title or f"Hybrid recovery: M₁'s layers < L, M₀'s from L on{verdict}",
                      xaxis_title="L (M₁ blocks below L; L = n: all of M₁ through M₀'s readout)",
                      yaxis_title="R_L = hybrid margin ÷ M₀ margin", template="plotly_white", height=380,
                      legend={"orientation": "h", "y": -0.3})
    return fig


def plot_roc(curves: dict[str, list[tuple[float, float]]], title: str = "Erasure vs suppression controls: ROC") -> Any:
    """ROC curves ``name → [(fpr, tpr), ...]`` (erasure = positive)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, pts in curves.items():
        fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers", name=name))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dot", "color": "#999"}, showlegend=False))
    fig.update_layout(title=title, xaxis_title="false-positive rate (suppression called erasure)",
                      yaxis_title="true-positive rate", template="plotly_white", height=380, width=520)
    return fig


def plot_cad_null(null: list[float] | tuple[float, ...], observed: float, z: float, title: str = "CAD vs its null") -> Any:
    """Histogram of the split-half null CAD values with the observed CAD as a vertical line."""
    import plotly.graph_objects as go

    fig = go.Figure(go.Histogram(x=list(null), nbinsx=30, name="null (M₀ vs M₀)", marker_color="#9aa5b1"))
    fig.add_vline(x=observed, line_color="#d62728", line_width=3,
                  annotation_text=f"observed {observed:.3f} (z = {z:.1f})", annotation_position="top")
    fig.update_layout(title=title, xaxis_title="CAD (normalised L1 divergence on the base circuit)",
                      yaxis_title="count", template="plotly_white", showlegend=False, height=360)
    return fig


def plot_layer_mass(layers: list[int], base: list[float], edited: dict[str, list[float]],
                    title: str = "Attribution mass of the base circuit by layer") -> Any:
    """Grouped bars: Σ|score| of the circuit's edges by source layer for M₀ and each M₁ readout."""
    import plotly.graph_objects as go

    labels = ["input" if layer < 0 else f"L{layer}" for layer in layers]
    fig = go.Figure(go.Bar(x=labels, y=base, name="M₀ (base)", marker_color="#1f77b4"))
    colors = ["#ff7f0e", "#2ca02c", "#9467bd"]
    for (name, ys), c in zip(edited.items(), colors, strict=False):
        fig.add_trace(go.Bar(x=labels, y=ys, name=name, marker_color=c))
    fig.update_layout(barmode="group", title=title, xaxis_title="source layer", yaxis_title="Σ |edge score|",
                      template="plotly_white", height=360, legend={"orientation": "h", "y": -0.25})
    return fig


def plot_circuit_diff(cad_result: dict[str, Any], title: str | None = None, max_width: float = 8.0) -> Any:
    """The base circuit C drawn once; each edge coloured by its signed attribution change in M₁ read
    through M₀'s readout (blue = gained, red = lost), width ∝ |base score|, dashed when the edge no longer
    carries at least half of its base attribution in M₁ (it does not survive in M₁'s circuit)."""
    import plotly.graph_objects as go

    from circuitforge.attribution.graph import reader_component, split_edge
    from circuitforge.viz.circuit import place

    m = cad_result["circuit"].get("model", {})
    H, L = int(m.get("n_heads", 1)), int(m.get("n_layers", 1))
    rows = cad_result["edges"]
    top = max((abs(r["base"]) for r in rows), default=0.0) or 1.0
    # colour scale: the 90th percentile of |change| (one huge edge, e.g. input->m0, would grey out the rest)
    changes = sorted(abs(r["change"]) for r in rows)
    top_change = (changes[int(0.9 * (len(changes) - 1))] if changes else 0.0) or 1.0
    fig = go.Figure()
    nodes = {"input", "logits"}
    for r in rows:
        s, d = split_edge(r["edge"])
        comp = reader_component(d)
        nodes |= {s, comp}
        (x0, y0), (x1, y1) = place(s, H, L), place(comp, H, L)
        frac = max(-1.0, min(1.0, r["change"] / top_change))
        colour = f"rgba({int(214 * max(0.0, -frac)) + 60}, 60, {int(180 * max(0.0, frac)) + 60}, 0.8)"
        survives = abs(r["edited_base_readout"]) >= 0.5 * abs(r["base"])
        fig.add_trace(go.Scatter(
            x=[x0, x1], y=[y0, y1], mode="lines", showlegend=False, hoverinfo="text",
            text=f"{r['edge']}: base {r['base']:+.3g} → edited {r['edited_base_readout']:+.3g} "
                 f"(own readout {r['edited_own_readout']:+.3g})",
            line={"width": 0.8 + max_width * abs(r["base"]) / top, "color": colour,
                  "dash": "solid" if survives else "dash"}))
    xs, ys, labels = [], [], []
    for n in sorted(nodes):
        x, y = place(n, H, L)
        xs.append(x)
        ys.append(y)
        labels.append(n)
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers+text", text=labels, textposition="top center",
                             marker={"size": 12, "color": "#eee", "line": {"width": 1, "color": "#222"}},
                             hoverinfo="text", showlegend=False))
    fig.update_layout(
        title=title or f"Circuit diff ({cad_result['verdict']}): red = attribution lost, blue = gained, dashed = edge gone",
        xaxis=layer_axis(L),
        yaxis={"showticklabels": False, "showgrid": False, "zeroline": False},
        plot_bgcolor="white", height=450 + 20 * H, width=300 + 90 * L)
    return fig


def layer_axis(n_layers: int) -> dict[str, Any]:
    """x-axis of the layered layout: ticks at every layer's attention column (about 12 labels)."""
    step = max(1, round(n_layers / 12))
    vals = [0.0] + [2.0 * layer + 1 for layer in range(0, n_layers, step)] + [2.0 * n_layers + 1]
    text = ["input"] + [f"L{layer}" for layer in range(0, n_layers, step)] + ["logits"]
    return {"title": "layer (execution order: input, attention, MLP, ..., logits)", "showgrid": False,
            "zeroline": False, "tickvals": vals, "ticktext": text, "range": [-1.0, 2.0 * n_layers + 2]}
