"""Plotly figures of a circuit that stay readable at 30 layers × 9 heads and ~700 edges.

Two views, both width-responsive (no fixed width: they fill a Jupyter cell or the report column):

* :func:`plot_circuit_heatmap` — the compact default: a layer × head grid of attribution (Σ |edge score| of
  the circuit's edges into or out of each component), a strip for the KV groups and a strip for the MLPs
  (plus the input embedding and the logits). One row per layer, so 30 layers read top to bottom.
* :func:`plot_circuit` — the layered graph (columns = execution order: input, each layer's attention,
  its MLP, ..., logits) with the top-k edges by |score| and a slider for k. Edge colour = sign (blue
  pushes toward the clean answer, red away), edge width = |score| band; node colours have a legend.

Edges are drawn as a few traces (one per rank band and sign, segments separated by ``None``), not one
trace per edge, so 700 edges stay light. plotly is imported inside the functions.
"""

import math
import os
from typing import Any

from circuitforge.attribution.graph import reader_component, split_edge
from circuitforge.circuits.circuit import Circuit

POS, NEG = "#1f77b4", "#d62728"
NODE_KINDS = {"attention head": "#ff7f0e", "KV group (reads k/v)": "#9467bd", "MLP": "#2ca02c",
              "input / logits": "#444444"}
RESPONSIVE = {"responsive": True, "displaylogo": False}
"""plotly ``config`` for every figure written to HTML: resize with the page."""


def node_kind(node: str) -> str:
    """The legend kind of a component id (``"a3.h1"`` → ``"attention head"``)."""
    if node in ("input", "logits"):
        return "input / logits"
    if ".kv" in node:
        return "KV group (reads k/v)"
    if node.startswith("m"):
        return "MLP"
    return "attention head"


def node_layer(node: str) -> int:
    """Layer of a component id; ``input`` is −1 and ``logits`` a large number (sorts last)."""
    if node == "input":
        return -1
    if node == "logits":
        return 10**6
    return int(node[1:].split(".", 1)[0])


def place(node: str, n_heads: int, n_layers: int) -> tuple[float, float]:
    """Layered layout of a component (x = execution order: input, each layer's attention, its MLP, …,
    logits; y = head index, KV heads just left of their query heads; a neuron ``m{L}.n{I}`` sits at its MLP)."""
    if node == "input":
        return (0.0, 0.0)
    if node == "logits":
        return (2.0 * n_layers + 1, 0.0)
    if node.startswith("m"):
        return (2.0 * int(node[1:].split(".", 1)[0]) + 2, 0.0)
    layer, rest = node[1:].split(".", 1)
    x = 2.0 * int(layer) + 1
    if rest.startswith("kv"):  # KV heads sit just left of their query heads
        return (x - 0.55, (int(rest[2:]) + 0.5) * 1.0 - n_heads / 2.0 - 0.5)
    return (x, int(rest[1:]) - (n_heads - 1) / 2.0)


def layer_axis(n_layers: int, title: str = "layer (input → attention, MLP → logits)") -> dict[str, Any]:
    """The x-axis of the layered layout: ticks at every layer's attention column (about 12 labels)."""
    step = max(1, round(n_layers / 12))
    shown = range(0 if step == 1 else step, n_layers, step)  # L0 sits next to "input": label from L{step}
    vals = [0.0] + [2.0 * layer + 1 for layer in shown] + [2.0 * n_layers + 1]
    text = ["input"] + [f"L{layer}" for layer in shown] + ["logits"]
    return {"title": title, "showgrid": False, "zeroline": False, "tickvals": vals, "ticktext": text,
            "range": [-1.0, 2.0 * n_layers + 2]}


def responsive_layout(fig: Any, height: int) -> Any:
    """No fixed width (autosize to the container), a fixed height, compact margins; returns ``fig``."""
    fig.update_layout(autosize=True, width=None, height=height, margin={"l": 50, "r": 20, "t": 60, "b": 50},
                      template="plotly_white", title_font_size=14, title_x=0.02, title_xanchor="left")
    return fig


def legend_below(fig: Any, px: int = 60) -> Any:
    """Put the legend ``px`` pixels below the plot area (clear of subplot titles and tick labels)."""
    m = fig.layout.margin
    t, b = int(m.t or 60), max(int(m.b or 50), px + 80)  # room for a legend that wraps to three lines
    plot_h = max(100, int(fig.layout.height or 500) - t - b)
    fig.update_layout(margin={"b": b}, legend={"orientation": "h", "x": 0, "xanchor": "left", "y": -px / plot_h,
                                               "yanchor": "top"})
    return fig


def _dims(model: dict[str, Any]) -> tuple[int, int, int]:
    H = int(model.get("n_heads", 1))
    return int(model.get("n_layers", 1)), H, int(model.get("n_kv_heads", H))


def component_mass(edges: dict[str, float]) -> dict[str, dict[str, float]]:
    """Per component: ``{"abs", "pos", "neg", "n"}`` over the edges into or out of it (KV reads count for
    the KV group; ``input`` and ``logits`` included). ``edges`` maps edge id → score."""
    out: dict[str, dict[str, float]] = {}
    for e, sc in edges.items():
        s, d = split_edge(e)
        for comp in (s, reader_component(d)):
            m = out.setdefault(comp, {"abs": 0.0, "pos": 0.0, "neg": 0.0, "n": 0.0})
            m["abs"] += abs(sc)
            m["pos" if sc >= 0 else "neg"] += sc
            m["n"] += 1
    return out


def plot_circuit_heatmap(circuit: Circuit, title: str | None = None) -> Any:
    """Layer × head heatmap of Σ |edge score| per component (see module docstring), a KV-group strip and
    an MLP strip on one logarithmic colour scale (one component, e.g. the first MLP, often carries ten
    times the rest); blank cells are not in the circuit. Hover gives the exact value and signed parts."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    L, H, G = _dims(circuit.model)
    mass = component_mass({e: circuit.scores.get(e, 0.0) for e in circuit.edges})
    rows = ["input"] + [f"L{i}" for i in range(L)] + ["logits"]
    positive = [m["abs"] for m in mass.values() if m["abs"] > 0] or [1.0]
    lo, hi = math.floor(math.log10(min(positive))), math.ceil(math.log10(max(positive)))
    hi = max(hi, lo + 1)
    ticks = list(range(lo, hi + 1))
    colorbar = {"title": {"text": "Σ|edge score| (log scale)", "side": "right"}, "thickness": 12,
                "tickvals": ticks, "ticktext": [f"{10.0 ** t:g}" for t in ticks]}

    def grid(cols: list[str], comp: Any) -> tuple[list[list[float | None]], list[list[str]]]:
        z: list[list[float | None]] = []
        txt: list[list[str]] = []
        for r in rows:
            zr: list[float | None] = []
            tr: list[str] = []
            for c in cols:
                name = comp(r, c)
                m = mass.get(name) if name else None
                zr.append(None if m is None or m["abs"] <= 0 else math.log10(m["abs"]))
                tr.append("" if m is None else f"{name}: Σ|score| {m['abs']:.3g} (+{m['pos']:.3g} / {m['neg']:.3g}), "
                                                f"{int(m['n'])} edges")
            z.append(zr)
            txt.append(tr)
        return z, txt

    def layer_of(r: str) -> int | None:
        return int(r[1:]) if r.startswith("L") else None

    heads = [f"h{h}" for h in range(H)]
    kvs = [f"kv{g}" for g in range(G)]
    panels = [
        ("heads", heads, lambda r, c: None if layer_of(r) is None else f"a{layer_of(r)}.{c}"),
        ("KV", kvs, lambda r, c: None if layer_of(r) is None else f"a{layer_of(r)}.{c}"),
        ("MLP", ["MLP"], lambda r, c: r if r in ("input", "logits") else f"m{layer_of(r)}"),
    ]
    fig = make_subplots(rows=1, cols=3, shared_yaxes=True, horizontal_spacing=0.03,
                        column_widths=[H / (H + G + 1.5), G / (H + G + 1.5), 1.5 / (H + G + 1.5)],
                        subplot_titles=[p[0] for p in panels])
    for i, (_, cols, comp) in enumerate(panels, start=1):
        z, txt = grid(cols, comp)
        fig.add_trace(go.Heatmap(z=z, x=cols, y=rows, text=txt, hoverinfo="text", zmin=lo, zmax=hi,
                                 colorscale="Viridis", showscale=i == 1, xgap=1, ygap=1, colorbar=colorbar),
                      row=1, col=i)
    fig.update_yaxes(autorange="reversed", title_text="layer (top = input)", row=1, col=1)
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(tickangle=0, tickfont={"size": 10})
    f = "" if circuit.faithfulness is None else f", faithfulness {circuit.faithfulness:.3f}"
    fig.update_layout(title=title or f"{circuit.model.get('spec', 'model')}: {circuit.n_edges} edges{f}<br><sup>"
                                     "Σ|edge score| per component; blank = not in the circuit</sup>")
    fig = responsive_layout(fig, 170 + 17 * len(rows))
    fig.update_layout(margin={"t": 80})
    return fig


BANDS = (10, 25, 50, 100, 200, 400, 800, 1600)


def _band_edges(n: int) -> list[int]:
    """Cumulative band ends for ``n`` ranked edges: 10, 25, 50, ... (capped at n, last = n)."""
    ends = [b for b in BANDS if b < n] + [n]
    return ends


def plot_circuit(circuit: Circuit, title: str | None = None, max_width: float = 6.0,
                 top_k: int | None = 50) -> Any:
    """The layered graph of ``circuit`` (see module docstring). ``top_k``: edges shown at first (by
    |score|; None = all); a slider shows the top 10, 25, 50, ... or all edges."""
    scores = {e: circuit.scores.get(e, 0.0) for e in circuit.edges}
    L, H, _ = _dims(circuit.model)
    f = "" if circuit.faithfulness is None else f", faithfulness {circuit.faithfulness:.3f}"
    title = title or f"{circuit.model.get('spec', 'model')}: {circuit.n_edges} edges{f}"
    return edge_graph(scores, L, H, title, top_k=top_k, max_width=max_width,
                      sign_names=("pushes toward the clean answer (+)", "pushes away (−)"))


def edge_graph(scores: dict[str, float], n_layers: int, n_heads: int, title: str, *, top_k: int | None = 50,
               max_width: float = 6.0, scale: float | None = None,
               sign_names: tuple[str, str] = ("positive", "negative"), fig: Any = None, row: int | None = None,
               slider: bool = True) -> Any:
    """Draw ``scores`` (edge id → signed value) on the layered layout: rank bands of |value| as traces
    (width ∝ band's largest |value| / ``scale``), nodes coloured by kind with a legend, and a top-k
    slider. With ``fig``/``row`` it draws into a subplot row (no slider) and returns ``fig``."""
    import plotly.graph_objects as go

    ranked = sorted(scores.items(), key=lambda kv: -abs(kv[1]))
    scale = scale or (abs(ranked[0][1]) if ranked else 0.0) or 1.0
    ends = _band_edges(len(ranked)) if ranked else []
    k0 = len(ranked) if top_k is None else min(top_k, len(ranked))
    k0 = next((end for end in ends if end >= k0), k0)  # start on a band end (a slider position)
    own = fig is None
    fig = fig if fig is not None else go.Figure()
    where = {} if row is None else {"row": row, "col": 1}
    band_of_trace: list[int] = []
    start = 0
    for end in ends:
        band = ranked[start:end]
        for sign, colour, name in ((1, POS, sign_names[0]), (-1, NEG, sign_names[1])):
            xs: list[float | None] = []
            ys: list[float | None] = []
            hx, hy, ht = [], [], []
            for e, v in band:
                if (v >= 0) != (sign > 0):
                    continue
                s, d = split_edge(e)
                (x0, y0), (x1, y1) = place(s, n_heads, n_layers), place(reader_component(d), n_heads, n_layers)
                xs += [x0, x1, None]
                ys += [y0, y1, None]
                hx.append((x0 + x1) / 2)
                hy.append((y0 + y1) / 2)
                ht.append(f"{e}: {v:+.4g}")
            if not xs:
                continue
            width = 0.6 + max_width * abs(band[0][1]) / scale
            visible = end <= k0
            show_legend = not any(t.legendgroup == name and t.showlegend for t in fig.data)
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line={"color": colour, "width": width},
                                     opacity=0.75, name=name, legendgroup=name, showlegend=show_legend,
                                     hoverinfo="skip", visible=visible), **where)
            fig.add_trace(go.Scatter(x=hx, y=hy, mode="markers", marker={"size": 6, "color": colour, "opacity": 0},
                                     text=ht, hoverinfo="text", showlegend=False, legendgroup=name,
                                     visible=visible), **where)
            band_of_trace += [end, end]
        start = end
    first_band: dict[str, int] = {"input": ends[0] if ends else 0, "logits": ends[0] if ends else 0}
    start = 0
    for end in ends:
        for e, _ in ranked[start:end]:
            s, d = split_edge(e)
            for n in (s, reader_component(d)):
                first_band.setdefault(n, end)
        start = end
    for end in sorted(set(first_band.values())):
        for kind, colour in NODE_KINDS.items():
            members = sorted(n for n, b in first_band.items() if b == end and node_kind(n) == kind)
            if not members:
                continue
            pts = [place(n, n_heads, n_layers) for n in members]
            show_legend = not any(t.name == kind and t.showlegend for t in fig.data)
            fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="markers", name=kind,
                                     legendgroup=kind, showlegend=show_legend, text=members, hoverinfo="text",
                                     visible=end <= k0,
                                     marker={"size": 8, "color": colour, "line": {"width": 0.5, "color": "#222"}}),
                          **where)
            band_of_trace.append(end)
    yax = {"showticklabels": False, "showgrid": False, "zeroline": False, "title": "heads (KV groups left of them)"}
    if not own:
        fig.update_xaxes(**layer_axis(n_layers, ""), **where)
        fig.update_yaxes(**yax, **where)
        return fig
    fig.update_layout(title=title, xaxis=layer_axis(n_layers), yaxis=yax)
    if slider and len(ends) > 1:
        steps = []
        for end in ends:
            vis = [be <= end for be in band_of_trace]
            steps.append({"method": "restyle", "args": [{"visible": vis}],
                          "label": "all" if end == len(ranked) else str(end)})
        active = next((i for i, end in enumerate(ends) if end >= k0), len(ends) - 1)
        fig.update_layout(sliders=[{"active": active, "steps": steps, "pad": {"t": 60},
                                    "currentvalue": {"prefix": "edges shown (top by |score|): "}}])
    fig = responsive_layout(fig, 640 + 12 * n_heads)
    return legend_below(fig, 150 if fig.layout.sliders else 60)


def save_circuit_html(circuit: Circuit, path: str | os.PathLike[str], title: str | None = None) -> str:
    """Write the heatmap and the graph as one self-contained HTML file (plotly.js inlined, works offline)."""
    from circuitforge._provenance import write_text_atomic
    from circuitforge.viz.html import html_report

    page = html_report(title or "circuit", [("Attribution per component", plot_circuit_heatmap(circuit)),
                                            ("Top edges by |score|", plot_circuit(circuit))])
    write_text_atomic(path, page)
    return str(path)
