"""Plotly figures for CAD: the null histogram with the observed value, and per-layer attribution mass of
the base circuit in M₀ vs M₁. Figures are returned (they render inline in Jupyter) and can be written as
self-contained HTML with :func:`save_html`. plotly is imported lazily."""

import os
from typing import Any

from circuitforge._provenance import write_text_atomic


def save_html(fig: Any, path: str | os.PathLike[str]) -> None:
    """Write a self-contained HTML file (plotly.js inlined, works offline)."""
    write_text_atomic(path, fig.to_html(include_plotlyjs=True, full_html=True))


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
