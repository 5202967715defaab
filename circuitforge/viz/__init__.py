"""Stage 9 — viz: plotly figures and self-contained HTML reports (the last stage: it may import every
other stage, nothing imports it but the CLI).

Every ``plot_*`` function returns a plotly ``Figure`` that is width-responsive (it fills a Jupyter cell or
the report column); plotly is imported inside the functions, so ``import circuitforge.viz`` is cheap.

| module | figures |
|---|---|
| :mod:`.circuit` | :func:`plot_circuit` (top-k edges, slider, legend), :func:`plot_circuit_heatmap` (layer × head grid + KV/MLP strips), :func:`save_circuit_html` |
| :mod:`.diff` | :func:`plot_edge_diff` (only changed edges, methods on one scale), :func:`plot_layer_change` (attribution lost / gained per layer) |
| :mod:`.cad` | :func:`plot_hybrid_recovery` (recovery R_L over layers), :func:`plot_cad_null`, :func:`plot_roc`, :func:`plot_layer_mass`, :func:`plot_circuit_diff` |
| :mod:`.report` | :func:`plot_scorecard` / :func:`plot_scorecards` (value-vs-threshold bullets), :func:`verify_report` |
| :mod:`.demo_report` | :func:`demo_report` — the demo's page: verdict first, summary table, what was done, figures |
| :mod:`.html` | :func:`html_report` — sections of figures and HTML into one offline page |

>>> from circuitforge.viz import plot_circuit_heatmap   # doctest: +SKIP
>>> plot_circuit_heatmap(circuit)                        # doctest: +SKIP
"""

from circuitforge.viz.cad import (
    plot_cad_null,
    plot_circuit_diff,
    plot_hybrid_recovery,
    plot_layer_mass,
    plot_roc,
)
from circuitforge.viz.circuit import plot_circuit, plot_circuit_heatmap, save_circuit_html
from circuitforge.viz.demo_report import demo_report
from circuitforge.viz.diff import plot_edge_diff, plot_layer_change
from circuitforge.viz.html import html_report
from circuitforge.viz.report import plot_scorecard, plot_scorecards, verify_report

__all__ = [
    "demo_report", "html_report", "plot_cad_null", "plot_circuit", "plot_circuit_diff", "plot_circuit_heatmap",
    "plot_edge_diff", "plot_hybrid_recovery", "plot_layer_change", "plot_layer_mass", "plot_roc", "plot_scorecard",
    "plot_scorecards", "save_circuit_html", "verify_report",
]
