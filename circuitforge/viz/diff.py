"""What an unlearning method changed in the base circuit, from CAD results (``CADResult.to_dict()``).

Every edge row of a CAD result carries ``base`` (attribution on M₀) and ``edited_base_readout`` (on M₁'s
layers read through M₀'s readout: the mechanism); ``change`` = edited − base. Negative change = the edge
pushes less toward the clean answer than before (attribution *lost*), positive = *gained*.

* :func:`changed_edges` — the edges whose |change| is a sizeable share of their own base score and not
  negligible next to the circuit's largest edge (unchanged edges are left out, so two methods' diffs
  differ where the methods differ).
* :func:`layer_change` — per source layer, Σ of lost and Σ of gained attribution over all edges.
* :func:`plot_layer_change` — those sums as bars, methods side by side on one shared axis.
* :func:`plot_edge_diff` — the changed edges on the layered layout, one row per method, one width scale.

plotly is imported inside the functions.
"""

from typing import Any

from circuitforge.attribution.graph import split_edge
from circuitforge.viz.circuit import edge_graph, legend_below, node_layer, responsive_layout

LOST, GAINED = "#d62728", "#1f77b4"


def _base_scale(cad_result: dict[str, Any]) -> float:
    return max((abs(float(r["base"])) for r in cad_result.get("edges", [])), default=0.0)


def changed_edges(cad_result: dict[str, Any], rel_edge: float = 0.25, rel_max: float = 0.01) -> dict[str, float]:
    """Edge id → change (M₁ through M₀'s readout − M₀) for the edges that changed: |change| ≥
    ``rel_edge`` × the edge's own |base score| and ≥ ``rel_max`` × the largest |base score| in the circuit
    (and change ≠ 0). Ordered by |change|, largest first."""
    floor = rel_max * _base_scale(cad_result)
    kept = []
    for r in cad_result.get("edges", []):
        c = float(r["change"])
        if c != 0.0 and abs(c) >= floor and abs(c) >= rel_edge * abs(float(r["base"])):
            kept.append((r["edge"], c))
    return dict(sorted(kept, key=lambda ec: -abs(ec[1])))


def _src_layer(edge: str) -> int:
    return node_layer(split_edge(edge)[0])


def layer_change(cad_result: dict[str, Any], n_layers: int | None = None) -> dict[str, list[Any]]:
    """``{"layers": [-1 (input), 0, ..., L−1], "lost": [...], "gained": [...]}``: per source layer the Σ of
    negative changes (as a negative number) and the Σ of positive changes, over every edge of the circuit."""
    L = n_layers or int(cad_result.get("circuit", {}).get("model", {}).get("n_layers", 0)) or \
        1 + max((_src_layer(r["edge"]) for r in cad_result.get("edges", [])), default=0)
    layers = list(range(-1, L))
    lost = dict.fromkeys(layers, 0.0)
    gained = dict.fromkeys(layers, 0.0)
    for r in cad_result.get("edges", []):
        c, layer = float(r["change"]), _src_layer(r["edge"])
        if layer not in lost:
            continue
        if c < 0:
            lost[layer] += c
        else:
            gained[layer] += c
    return {"layers": layers, "lost": [lost[x] for x in layers], "gained": [gained[x] for x in layers]}


def plot_layer_change(cad_results: dict[str, dict[str, Any]],
                      title: str = "Attribution lost and gained per layer<br><sup>Σ over edges by source layer of "
                                   "(M₁ through M₀'s readout − M₀)</sup>") -> Any:
    """Horizontal bars per layer (rows: input, L0, ...): lost to the left (red), gained to the right
    (blue); one panel per method, side by side, on one shared x-axis."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    names = list(cad_results)
    fig = make_subplots(rows=1, cols=max(1, len(names)), shared_yaxes=True,
                        horizontal_spacing=0.04, subplot_titles=[f"{m} ({cad_results[m].get('verdict', '?')})"
                                                                 for m in names])
    n_rows = 0
    for i, m in enumerate(names, start=1):
        lc = layer_change(cad_results[m])
        labels = ["input" if x < 0 else f"L{x}" for x in lc["layers"]]
        n_rows = max(n_rows, len(labels))
        fig.add_trace(go.Bar(y=labels, x=lc["lost"], orientation="h", marker_color=LOST, name="attribution lost",
                             legendgroup="lost", showlegend=i == 1,
                             hovertemplate="%{y}: lost %{x:.4g}<extra>" + m + "</extra>"), row=1, col=i)
        fig.add_trace(go.Bar(y=labels, x=lc["gained"], orientation="h", marker_color=GAINED,
                             name="attribution gained", legendgroup="gained", showlegend=i == 1,
                             hovertemplate="%{y}: gained %{x:.4g}<extra>" + m + "</extra>"), row=1, col=i)
        fig.update_xaxes(title_text="Σ change of edge score", row=1, col=i)
    lo = min((min(layer_change(r)["lost"], default=0.0) for r in cad_results.values()), default=0.0)
    hi = max((max(layer_change(r)["gained"], default=0.0) for r in cad_results.values()), default=0.0)
    pad = 0.05 * ((hi - lo) or 1.0)
    fig.update_xaxes(range=[lo - pad, hi + pad])  # one scale for every method
    fig.update_yaxes(autorange="reversed", tickfont={"size": 9})
    fig.update_layout(barmode="relative", title=title)
    fig = responsive_layout(fig, 260 + 15 * n_rows)
    fig.update_layout(margin={"t": 90})
    return legend_below(fig)


def plot_edge_diff(cad_results: dict[str, dict[str, Any]], top_k: int = 60, rel_edge: float = 0.25,
                   rel_max: float = 0.01, title: str | None = None) -> Any:
    """The changed edges (:func:`changed_edges`, at most ``top_k`` per method by |change|) on the layered
    layout: red = attribution lost, blue = gained, width ∝ |change| on one scale for all methods; one
    row per method. Unchanged edges are not drawn (each row's title counts them)."""
    from plotly.subplots import make_subplots

    names = list(cad_results)
    diffs = {m: changed_edges(cad_results[m], rel_edge, rel_max) for m in names}
    scale = max((abs(v) for d in diffs.values() for v in d.values()), default=0.0) or 1.0
    titles = []
    for m in names:
        n_all, n_ch = len(cad_results[m].get("edges", [])), len(diffs[m])
        shown = min(top_k, n_ch)
        titles.append(f"<b>{m}</b> ({cad_results[m].get('verdict', '?')}): {n_ch} of {n_all} edges changed<br>"
                      f"(by ≥ {rel_edge:.0%} of their base score); {shown} largest shown")
    fig = make_subplots(rows=max(1, len(names)), cols=1, shared_xaxes=True, vertical_spacing=0.16 / max(1, len(names)),
                        subplot_titles=titles)
    L = H = 1
    for m in names:
        model = cad_results[m].get("circuit", {}).get("model", {})
        L, H = max(L, int(model.get("n_layers", 1))), max(H, int(model.get("n_heads", 1)))
    for i, m in enumerate(names, start=1):
        top = dict(list(diffs[m].items())[:top_k])
        edge_graph(top, L, H, "", top_k=None, scale=scale, fig=fig, row=i,
                   sign_names=("attribution gained", "attribution lost"))
    fig.update_annotations(font_size=11, x=0, xanchor="left")
    fig.update_layout(title=title or "Changed edges of the base circuit<br><sup>unchanged edges left out; "
                                     "one width scale for all methods</sup>")
    fig = responsive_layout(fig, 200 + (340 + 10 * H) * max(1, len(names)))
    fig.update_layout(margin={"t": 100})
    return legend_below(fig)
