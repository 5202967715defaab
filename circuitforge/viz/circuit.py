"""Plotly figure of a circuit: a layered layout (columns = execution order: input, each layer's heads,
its MLP, ..., logits), heads and MLPs as nodes, edges drawn with width ∝ |score| and coloured by sign
(blue = pushes toward the clean answer, red = away). Saved as self-contained HTML (plotly.js inlined).
plotly is imported inside the functions."""

import os
from typing import Any

from circuitforge.attribution.graph import reader_component, split_edge
from circuitforge.circuits.circuit import Circuit

POS, NEG = "#1f77b4", "#d62728"


def _place(node: str, n_heads: int, n_layers: int) -> tuple[float, float]:
    if node == "input":
        return (0.0, 0.0)
    if node == "logits":
        return (2.0 * n_layers + 1, 0.0)
    if node.startswith("m"):
        return (2.0 * int(node[1:]) + 2, 0.0)
    layer, rest = node[1:].split(".", 1)
    x = 2.0 * int(layer) + 1
    if rest.startswith("kv"):  # KV heads sit just left of their query heads
        return (x - 0.55, (int(rest[2:]) + 0.5) * 1.0 - n_heads / 2.0 - 0.5)
    return (x, int(rest[1:]) - (n_heads - 1) / 2.0)


def layer_axis(n_layers: int, title: str = "layer (execution order: input, attention, MLP, ..., logits)") -> dict[str, Any]:
    """The x-axis of the layered layout: ticks at every layer's attention column (about 12 labels)."""
    step = max(1, round(n_layers / 12))
    vals = [0.0] + [2.0 * layer + 1 for layer in range(0, n_layers, step)] + [2.0 * n_layers + 1]
    text = ["input"] + [f"L{layer}" for layer in range(0, n_layers, step)] + ["logits"]
    return {"title": title, "showgrid": False, "zeroline": False, "tickvals": vals, "ticktext": text}


def plot_circuit(circuit: Circuit, title: str | None = None, max_width: float = 8.0) -> Any:
    """A ``plotly.graph_objects.Figure`` of ``circuit`` (see module docstring)."""
    import plotly.graph_objects as go

    m = circuit.model
    H, L = int(m.get("n_heads", 1)), int(m.get("n_layers", 1))
    nodes: set[str] = {"input", "logits"} | circuit.nodes
    scores = [abs(circuit.scores.get(e, 0.0)) for e in circuit.edges]
    top = max(scores, default=0.0) or 1.0
    fig = go.Figure()
    for e in circuit.edges:
        s, d = split_edge(e)
        comp = reader_component(d)
        x0, y0 = _place(s, H, L)
        x1, y1 = _place(comp, H, L)
        sc = circuit.scores.get(e, 0.0)
        fig.add_trace(go.Scatter(
            x=[x0, x1], y=[y0, y1], mode="lines", hoverinfo="text", text=f"{e}: {sc:+.4g}", showlegend=False,
            line={"width": 0.5 + max_width * abs(sc) / top, "color": POS if sc >= 0 else NEG}, opacity=0.7,
        ))
    xs, ys, labels, colours = [], [], [], []
    for n in sorted(nodes):
        x, y = _place(n, H, L)
        xs.append(x)
        ys.append(y)
        labels.append(n)
        colours.append("#444" if n in ("input", "logits") else "#2ca02c" if n.startswith("m") else
                       "#9467bd" if ".kv" in n else "#ff7f0e")
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers+text", text=labels, textposition="top center",
                             marker={"size": 14, "color": colours, "line": {"width": 1, "color": "#222"}},
                             hoverinfo="text", showlegend=False))
    f = "" if circuit.faithfulness is None else f", faithfulness {circuit.faithfulness:.3f}"
    fig.update_layout(
        title=title or f"{m.get('spec', 'model')}: {circuit.n_edges} edges{f}",
        xaxis=layer_axis(L),
        yaxis={"showticklabels": False, "showgrid": False, "zeroline": False},
        plot_bgcolor="white", height=500 + 20 * H, width=300 + 90 * L,
    )
    return fig


def save_circuit_html(circuit: Circuit, path: str | os.PathLike[str], title: str | None = None) -> str:
    """Write the figure as a self-contained HTML file (plotly.js inlined, works offline)."""
    from circuitforge._provenance import write_text_atomic

    html = plot_circuit(circuit, title).to_html(include_plotlyjs=True, full_html=True)
    write_text_atomic(path, html)
    return str(path)
